"""Raw samples out of tar shards: ``{"__key__", "__url__", suffix: bytes, ...}``, faults recorded, never raised.

A shard that cannot be opened, breaks mid-stream, or ends before the count its manifest promises is reported to
the :class:`FaultLog` and the stream moves on; the samples read before the break are kept (a sample cut in half is
dropped, since it is only emitted once the next key starts). Truncation exactly at a member boundary is invisible
to tar itself, which is why the expected count matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from webdataset.tariterators import base_plus_ext, tar_file_iterator

from vsyn.data.faults import FaultLog
from vsyn.data.streams import open_url


@dataclass(frozen=True)
class Shard:
    url: str
    num_samples: int | None = None  # from the manifest, when there is one


def _group(members: Iterable[dict], url: str) -> Iterator[dict]:
    """Consecutive tar members with the same key form one sample."""
    sample: dict | None = None
    for member in members:
        key, suffix = base_plus_ext(member["fname"])
        if key is None:
            continue
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": url}
        sample[suffix.lower()] = member["data"]
    if sample is not None:
        yield sample


def read_shard(shard: Shard, faults: FaultLog) -> Iterator[dict]:
    """Every complete sample of one shard, in order."""
    count = 0
    try:
        with open_url(shard.url) as stream:
            for sample in _group(tar_file_iterator(stream), shard.url):
                count += 1
                yield sample
    except Exception as exc:  # any failure to read a shard costs the shard, never the run
        faults.add(shard.url, f"unreadable after {count} samples: {type(exc).__name__}: {exc}")
        return
    if count == 0:  # also keeps a resampling reader from spinning on empty shards
        faults.add(shard.url, "no samples")
    elif shard.num_samples is not None and count < shard.num_samples:
        faults.add(shard.url, f"ended after {count} of {shard.num_samples} samples (truncated)")
