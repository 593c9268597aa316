"""Resuming a run: what may change between the checkpoint and this command, decided before the run dir is touched.

A run resumes from its newest complete checkpoint. Settings that shape the networks, the losses or the optimizer
steps -- or that the bit-exact continuation of the data stream and the per-step randomness depend on -- must be
the checkpoint's: a change is refused with one line naming the keys, and nothing in the run dir changes (no
config.json rewritten, so the next plain `vsyn train RUN_DIR` still works). Everything else (total_kimg, logging
and snapshot intervals, data locations, workers, precision and speed options) may change and is logged.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from vsyn.config import Config, config_from_dict
from vsyn.errors import VsynError
from vsyn.snapshot import newest_checkpoint

# Keys (exact, or a section ending in '.') whose value must equal the checkpoint's.
FIXED_KEYS = (
    "model.",  # the networks: a change cannot load (size mismatch) or would retrain silently
    "loss.",  # the objective being optimised
    "optim.",  # Adam's settings and gradient clipping: the optimizer state was built under them
    "train.batch",  # clips per step, and so the meaning of every step and kimg so far
    "train.n_critic",  # the D/G step schedule
    "train.distributed",  # DDP and DeepSpeed save different state layouts
    "train.zero_stage",  # ZeRO shards the optimizer state by stage
    "train.seed",  # per-step randomness and the data stream are functions of (seed, step)
    "train.data_block_steps",  # the data stream's resumable position is counted in blocks of this many steps
    "data.stride",  # the frame rate the generator learns
)
IGNORED_KEYS = ("name",)  # only names the run dir and the TensorBoard run


def is_fixed(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in FIXED_KEYS)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


@dataclass
class ResumePlan:
    """Where this command starts: a fresh run (checkpoint None) or a resume, read from disk without writing."""

    checkpoint: Path | None = None
    step: int = 0
    nimg: int = 0
    best: dict[str, Any] | None = None
    changes: list[str] = field(default_factory=list)  # allowed changes, "key: old -> new"
    finished: bool = False  # the checkpoint already reached total_kimg / max_steps: nothing to train


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VsynError(f"cannot read {path}: {exc}") from None


def config_changes(saved: Config, cfg: Config) -> tuple[list[str], list[str]]:
    """(refused, allowed): the keys that differ, each as 'key: old -> new'."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    refused, allowed = [], []
    for key in sorted(old.keys() | new.keys()):
        if key in IGNORED_KEYS or old.get(key) == new.get(key):
            continue
        (refused if is_fixed(key) else allowed).append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return refused, allowed


def plan_resume(cfg: Config) -> ResumePlan:
    """Compare `cfg` with the newest complete checkpoint's config; refuse a change of a fixed key (VsynError)."""
    ckpt = newest_checkpoint(cfg.run_dir)
    if ckpt is None:
        return ResumePlan()
    try:
        saved = config_from_dict(_read_json(ckpt / "config.json"))
    except VsynError as exc:
        raise VsynError(f"{ckpt}: its config.json is not one this vsyn reads ({exc})") from None
    refused, allowed = config_changes(saved, cfg)
    if refused:
        raise VsynError(
            f"{cfg.run_dir} holds a checkpoint ({ckpt.name}) made with other settings that cannot change on resume: "
            f"{'; '.join(refused)}. Drop these overrides to continue the run, or give a new train.run_dir"
        )
    state = _read_json(ckpt / "state" / "trainer.json")
    step, nimg = int(state["step"]), int(state["nimg"])
    t = cfg.train
    finished = nimg >= t.total_kimg * 1000 or (t.max_steps > 0 and step >= t.max_steps)
    return ResumePlan(ckpt, step, nimg, state.get("best"), allowed, finished)


def _trained(run_dir: Path) -> bool:
    stats = run_dir / "logs" / "stats.jsonl"
    return newest_checkpoint(run_dir) is not None or (stats.is_file() and stats.stat().st_size > 0)


@contextlib.contextmanager
def remove_if_unused(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """A run dir this command creates is removed again if the command fails before a single step was logged:
    a refused or broken start leaves nothing behind (an existing run dir is never touched)."""
    created = enabled and not run_dir.exists()
    try:
        yield
    except BaseException:
        if created and run_dir.is_dir() and not _trained(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
