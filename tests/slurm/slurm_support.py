"""Constants and helpers shared by the SLURM tests (a plain module: `conftest` is not importable by name safely)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCAL_CLUSTER = REPO / "slurm" / "local-cluster"

# The real trainer, made as small as it goes (32 px is the critics' minimum); a step takes ~1 s on 2 cores.
TINY = [
    "model.frames=4", "model.spatial_frames=2", "model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4",
    "model.style_dim=16", "model.noise_dim=8", "train.batch=2", "train.n_critic=1", "train.sample_kimg=1000",
    "train.snapshot_kimg=0.004",  # a full checkpoint every ~4 steps
    "train.keep_last=10", "data.workers=0", "data.shuffle_buffer=4",
]
MAX_STEPS = 24  # enough steps after the first checkpoint for a requeue to land mid-run


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
