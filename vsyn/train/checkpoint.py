"""Full-state checkpoints: a snapshot (docs/contracts.md) plus `state/` and a `COMPLETE` marker, written atomically.

Layout of `run_dir/checkpoints/ckpt-<step>/`:
  config.json, generator.safetensors, generator_ema.safetensors, meta.json   the snapshot (vsyn.snapshot)
  state/g/, state/d/      each network's Accelerate state: weights, optimizer (ZeRO shards under DeepSpeed),
                          every rank's RNG states
  state/trainer.json      step, clips shown, data-stream position, best metric so far
  COMPLETE                written last, before the rename

All ranks write into `.tmp-ckpt-<step>` (DeepSpeed saves are collective and sharded), rank 0 finishes the
snapshot, marks it complete and renames it into place; a crash at any point leaves either the previous
checkpoint set or a stale temp dir that the next run deletes. Resume picks the newest complete one. The loop
normally writes the same layout from a background thread (async_checkpoint.py); `save_checkpoint` is the
synchronous path (DeepSpeed, or train.async_checkpoint=false) and `commit` the last step of both.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from vsyn.config import Config
from vsyn.snapshot import CHECKPOINT_PREFIX as PREFIX
from vsyn.snapshot import COMPLETE_MARKER, WEIGHT_FILES, complete_checkpoints, newest_checkpoint, save_snapshot
from vsyn.train.ema import GeneratorEMA
from vsyn.train.runtime import Runtime

TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:09d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    rt: Runtime, root: Path, cfg: Config, ema: GeneratorEMA, trainer_state: dict[str, Any], keep_last: int
) -> Path:
    """Collective: every rank must call it at the same step."""
    step, kimg = int(trainer_state["step"]), float(trainer_state["nimg"]) / 1000
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{final.name}"
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    rt.barrier()
    rt.save(tmp / "state")
    rt.barrier()
    if rt.is_main:
        save_snapshot(tmp, rt.raw_generator, ema.model, cfg, step, kimg)
        (tmp / "state" / "trainer.json").write_text(json.dumps(trainer_state, indent=2))
        commit(tmp, final, keep_last)
    rt.barrier()
    return final


def commit(tmp: Path, final: Path, keep_last: int, *, fsync_files: bool = False) -> None:
    """Rank 0, once every rank's files are in `tmp`: mark it complete, rename it into place, prune old ones.

    fsync_files: flush every file's data first (the background writer does; it costs the loop nothing there), so
    a machine crash cannot leave a COMPLETE checkpoint whose files were still in the page cache."""
    if fsync_files:
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                with path.open("rb") as f:
                    os.fsync(f.fileno())
            else:
                _fsync_dir(path)
    (tmp / COMPLETE_MARKER).write_text("")
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    prune(final.parent, keep_last)


def update_trainer_state(ckpt: Path, **changes: Any) -> None:
    """Rank 0: amend trainer.json of a finished checkpoint (write + rename, so it is never half-written)."""
    path = ckpt / "state" / "trainer.json"
    state = json.loads(path.read_text()) | changes
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def prune(root: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(root: Path) -> None:
    """Temp dirs of saves that died half-way; only rank 0 calls this, before anyone writes."""
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(TMP_PREFIX):
                shutil.rmtree(d, ignore_errors=True)


def find_resume(run_dir: Path) -> Path | None:
    """The checkpoint a run resumes from: the newest complete one (vsyn.snapshot.newest_checkpoint)."""
    return newest_checkpoint(run_dir)


def load_checkpoint(rt: Runtime, ckpt: Path, ema: GeneratorEMA) -> dict[str, Any]:
    """Collective. Restores networks, optimizers, this rank's RNG and the EMA; returns trainer.json."""
    rt.load(ckpt / "state")
    ema_state = load_file(str(ckpt / WEIGHT_FILES[True]))
    ema.model.load_state_dict({k: v.to(rt.device) for k, v in ema_state.items()})
    return json.loads((ckpt / "state" / "trainer.json").read_text())
