"""Turn what a user writes into a shard list: paths, brace patterns, ``http(s)://``, ``s3://``, or a manifest.

``DATA`` may be one string (parts joined with ``::``) or a list. A part that names a ``manifest.json`` -- or a
directory or URL prefix ending in ``/`` that holds one -- expands to the manifest's shards, with their sample
counts; ``manifest.json#val`` keeps only the shards of one split. Anything else is brace-expanded
(``shards/train-{000000..000009}.tar``).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence

from webdataset.shardlists import expand_urls

from vsyn.data.samples import Shard
from vsyn.data.streams import read_bytes
from vsyn.errors import VsynError

MANIFEST = "manifest.json"


def _manifest_url(part: str) -> str | None:
    base = part.split("#", 1)[0]
    if base.endswith(MANIFEST):
        return part
    if base.endswith("/") or ("://" not in base and os.path.isdir(base)):
        return base.rstrip("/") + "/" + MANIFEST + part[len(base) :]
    return None


def _from_manifest(url: str) -> list[Shard]:
    location, _, split = url.partition("#")
    try:
        manifest = json.loads(read_bytes(location))
        entries = manifest["shards"]
    except Exception as exc:
        raise VsynError(f"cannot read shard manifest {location}: {type(exc).__name__}: {exc}") from None
    base = posixpath.dirname(location) if "://" in location else os.path.dirname(location)
    join = posixpath.join if "://" in location else os.path.join
    chosen = [e for e in entries if not split or e.get("split") == split]
    if not chosen:
        raise VsynError(f"manifest {location} lists no shards" + (f" of split {split!r}" if split else ""))
    return [Shard(join(base, e["name"]), int(e["num_samples"])) for e in chosen]


def resolve(data: str | os.PathLike | Sequence[str]) -> list[Shard]:
    """The shards behind ``data``; raises VsynError when there are none."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    parts = data.split("::") if isinstance(data, str) else [os.fspath(p) for p in data]
    shards: list[Shard] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        manifest = _manifest_url(part)
        if manifest is not None:
            shards.extend(_from_manifest(manifest))
        else:
            shards.extend(Shard(url) for url in expand_urls(part))
    if not shards:
        raise VsynError(f"no shards given (data={data!r})")
    return shards


def total_samples(shards: list[Shard]) -> int | None:
    """Samples in all shards, when every count is known (manifests)."""
    counts = [s.num_samples for s in shards]
    return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]
