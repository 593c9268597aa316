"""Snapshot hooks: named callables run on every rank after each snapshot (metrics are collective and return the
same values on every rank), returning metrics to log.

The registry keeps the loop ignorant of what is measured; `metrics` (the default) calls
`vsyn.metrics.run_snapshot_metrics` when that exists and `cfg.eval.metrics` names some.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vsyn.config import Config

log = logging.getLogger(__name__)


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
    try:
        fn = getattr(importlib.import_module("vsyn.metrics"), "run_snapshot_metrics")
    except (ImportError, AttributeError):
        log.warning("eval.metrics=%s but vsyn.metrics.run_snapshot_metrics is not available", ctx.cfg.eval.metrics)
        return {}
    data_url = ctx.cfg.data.val or ctx.cfg.data.train
    return dict(fn(ctx.generator_ema, ctx.cfg, names=ctx.cfg.eval.metrics, data_url=data_url, n=ctx.cfg.eval.n))


def selection_score(name: str, value: float) -> float:
    """Lower is better, whatever the metric's direction (vsyn.metrics knows each one)."""
    try:
        from vsyn.metrics import selection_score as score
    except ImportError:
        return value
    return score(name, value)


def run_snapshot_hooks(ctx: SnapshotContext) -> dict[str, float]:
    results: dict[str, float] = {}
    for name, hook in HOOKS.items():
        with torch.no_grad():
            results.update(hook(ctx))
    return results
