"""Snapshot hooks: named callables run on every rank after each snapshot (metrics are collective and return the
same values on every rank), returning metrics to log.

The registry keeps the loop ignorant of what is measured; `metrics` (the default) calls
`vsyn.metrics.run_snapshot_metrics` when `cfg.eval.metrics` names some. Best-snapshot selection uses
`vsyn.metrics.selection_score` (lower is better after it, whatever the metric's direction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vsyn.config import Config
from vsyn.metrics import run_snapshot_metrics


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


@snapshot_hook("metrics")
def _metrics(ctx: SnapshotContext) -> dict[str, float]:
    if not ctx.cfg.eval.metrics:
        return {}
    data_url = ctx.cfg.data.val or ctx.cfg.data.train
    return dict(run_snapshot_metrics(ctx.generator_ema, ctx.cfg, names=ctx.cfg.eval.metrics, data_url=data_url,
                                     n=ctx.cfg.eval.n))


def run_snapshot_hooks(ctx: SnapshotContext) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, hook in HOOKS.items():
        with torch.no_grad():
            results.update(hook(ctx))
    return results
