"""``vsyn shards pack``: units -> (parallel workers) samples -> (this process) size-capped shards + manifest.

Resumable: after each shard is published, a journal line records it with the *cursor* -- the unit and the sample
within that unit where the next shard starts. Sample order and bytes are deterministic for a given config, so a
re-run keeps every journalled shard that still verifies (size and sha256), drops the rest, and re-processes only
from the cursor on. A journal written with a different config is refused rather than mixed in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from shards.manifest import check_shard, write_manifest
from shards.preprocess import ClipOptions, UnitResult, unit_samples
from shards.sources import Unit
from shards.writer import ShardInfo, ShardWriter
from vsyn.errors import VsynError

JOURNAL = ".pack-journal.jsonl"
SPLIT_ORDER = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ShardLimits:
    max_bytes: int = 1 << 30
    max_samples: int = 10_000


@dataclass
class Summary:
    samples: int
    shards: int
    bytes: int
    resumed_shards: int
    dropped: Counter
    errors: list[str]
    seconds: float

    def line(self, out: Path) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return (f"packed {self.samples} clips into {self.shards} shard(s), {self.bytes / 1e6:.1f} MB, in {out} "
                f"({self.seconds:.1f} s; {self.resumed_shards} shard(s) kept from an earlier run; dropped: {dropped})")


def order_units(units: list[Unit]) -> list[Unit]:
    """Train units first, then val: one shard open at a time, and a single cursor covers both splits."""
    return sorted(units, key=lambda u: SPLIT_ORDER.get(u.split, 2))


def _read_journal(out: Path, config: dict) -> list[dict]:
    """Journalled shards that still verify, in order, up to the first that does not."""
    path = out / JOURNAL
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("config") != config:
        raise VsynError(f"{out} holds a pack made with other settings; pack into a new folder or delete it")
    kept = []
    for record in lines[1:]:
        if check_shard(out, record["shard"], deep=False) is not None:
            break
        kept.append(record)
    return kept


def _rewrite_journal(out: Path, config: dict, records: list[dict]) -> None:
    tmp = out / (JOURNAL + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in [{"config": config}, *records]))
    os.replace(tmp, out / JOURNAL)


def _results(units: list[Unit], opts: ClipOptions, workers: int) -> Iterator[UnitResult]:
    work = partial(unit_samples, opts=opts)
    if workers <= 1:
        yield from map(work, units)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, units, chunksize=1)


def pack(units: list[Unit], out: Path, opts: ClipOptions, limits: ShardLimits, config: dict,
         workers: int = os.cpu_count() or 1) -> Summary:
    """Pack ``units`` into ``out``; ``config`` (everything that shapes the bytes) goes into the manifest."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.tmp"):
        stale.unlink()
    units = order_units(units)
    config = {**config, "clip": asdict(opts), "limits": asdict(limits), "units": len(units)}
    records = _read_journal(out, config)
    _rewrite_journal(out, config, records)  # drops records of shards that no longer verify
    infos = [ShardInfo(**r["shard"]) for r in records]
    resumed = len(infos)
    next_index = Counter(info.split for info in infos)
    first_unit, skip = records[-1]["cursor"] if records else (0, 0)

    writer: ShardWriter | None = None
    dropped: Counter = Counter()
    errors: list[str] = []
    samples = 0

    def publish(cursor: tuple[int, int]) -> None:
        nonlocal writer
        assert writer is not None
        info = writer.close()
        infos.append(info)
        with open(out / JOURNAL, "a") as journal:
            journal.write(json.dumps({"shard": info.entry(), "cursor": list(cursor)}) + "\n")
        writer = None

    todo = units[first_unit:]
    bar = tqdm(total=len(todo), unit="unit", desc=f"pack {config.get('source', '')}", disable=None)
    try:
        for u, result in enumerate(_results(todo, opts, min(workers, len(todo))), start=first_unit):
            dropped += result.dropped
            if result.error:
                errors.append(result.error)
            split = units[u].split
            for n, (key, members) in enumerate(result.samples):
                if u == first_unit and n < skip:
                    continue
                if writer is not None and writer.split != split:
                    publish((u, n))
                if writer is None:
                    name = f"{split}-{next_index[split]:06d}.tar"
                    next_index[split] += 1
                    writer = ShardWriter(out / name, split)
                writer.add(key, members)
                samples += 1
                if writer.bytes >= limits.max_bytes or writer.num_samples >= limits.max_samples:
                    publish((u, n + 1))
            bar.update()
            bar.set_postfix(clips=samples, shards=len(infos) - resumed)
        if writer is not None:
            publish((len(units), 0))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    if not infos:
        raise VsynError(f"no clips to pack ({dict(dropped) or 'no input'}); check --frames, --size and the inputs")
    write_manifest(out, infos, config)
    return Summary(samples, len(infos) - resumed, sum(i.bytes for i in infos), resumed, dropped, errors,
                   time.perf_counter() - started)
