"""Snapshot hooks: named callables run on every rank after each snapshot (metrics are collective and return the
same values on every rank), returning metrics to log.

The registry keeps the loop ignorant of what is measured; `metrics` (the default) calls
`vsyn.metrics.run_snapshot_metrics` when `cfg.eval.metrics` names some, on the first `eval.n` clips of the held-out
split of `data.val` (else of `data.train`): the same clips and noise at every snapshot. Best-snapshot selection uses
`vsyn.metrics.selection_score` (lower is better after it, whatever the metric's direction) on `eval.best_metric`,
or on `motion_score` when that is empty and motion is measured (`best_metric`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vsyn.config import Config
from vsyn.metrics import eval_data, run_snapshot_metrics


@dataclass
class SnapshotContext:
    cfg: Config
    snapshot: Path  # the checkpoint directory (a snapshot)
    generator_ema: nn.Module
    step: int
    kimg: float
    device: torch.device


SnapshotHook = Callable[[SnapshotContext], dict[str, float]]
HOOKS: dict[str, SnapshotHook] = {}


def snapshot_hook(name: str) -> Callable[[SnapshotHook], SnapshotHook]:
    def register(fn: SnapshotHook) -> SnapshotHook:
        HOOKS[name] = fn
        return fn

    return register


def snapshot_data(cfg: Config) -> str:
    """The held-out clips the snapshot metrics read: data.val (else data.train) with its val/test split named.
    Called before training too, so a missing held-out split fails at once, not at the first snapshot."""
    return eval_data(cfg.data.val or cfg.data.train)


def best_metric(cfg: Config, results: dict[str, float]) -> str:
    """What `best` follows: eval.best_metric, else the motion score when the snapshot measured it."""
    metric = {"motion": "motion_score"}.get(cfg.eval.best_metric, cfg.eval.best_metric)
    return metric or ("motion_score" if "motion_score" in results else "")


@snapshot_hook("metrics")
def _metrics(ctx: SnapshotContext) -> dict[str, float]:
    if not ctx.cfg.eval.metrics:
        return {}
    return dict(run_snapshot_metrics(ctx.generator_ema, ctx.cfg, names=ctx.cfg.eval.metrics,
                                     data_url=snapshot_data(ctx.cfg), n=ctx.cfg.eval.n))


def run_snapshot_hooks(ctx: SnapshotContext) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, hook in HOOKS.items():
        with torch.no_grad():
            results.update(hook(ctx))
    return results
