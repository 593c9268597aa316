"""Training teaches the motion head to keep the ground still: a short CPU run on tiny procedural scenes lowers the
share of static pixels that change (the motion metrics' leak, on held-out scenes) below the untrained model's.

What moves the number this early is the head's moving mask, pushed by the temporal critic (real scenes keep their
ground still) and by the still prior (loss.motion_still). A learning rate 10x the preset's makes it show within a
few dozen CPU steps, and a larger top speed (model.max_speed=8) makes the untrained head move the ground by whole
pixels, so there is a leak to lower; the preset itself needs thousands of steps (bench/RESULTS.md, the motion
study).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shards.procedural import clip_seed, make_clip
from vsyn.config import load_config
from vsyn.inference import load_generator
from vsyn.metrics.motion import benchmark
from vsyn.nn import build_generator
from vsyn.train import loop


def held_out(n: int, size: int, frames: int) -> dict[str, torch.Tensor]:
    clips = [make_clip(clip_seed(0, i, "test"), size, frames) for i in range(n)]
    return {
        "video": torch.tensor(np.stack([c["video"] for c in clips])).permute(0, 1, 4, 2, 3),
        "flow": torch.tensor(np.stack([c["flow"] for c in clips])),
        "mask": torch.tensor(np.stack([c["mask"] for c in clips])),
    }


@pytest.mark.slow
def test_short_training_lowers_the_static_leak(shards, tmp_path):
    overrides = [f"data.train={shards}", f"train.run_dir={tmp_path / 'run'}", "train.max_steps=30",
                 "train.total_kimg=1", "train.snapshot_kimg=1000", "train.sample_kimg=1000", "train.trackers=",
                 "train.batch=2", "model.frames=5", "model.spatial_frames=2", "model.ch_g=4", "model.ch_ds=4",
                 "model.ch_dt=4", "model.max_speed=8", "optim.lr_g=3e-3", "optim.lr_d=3e-3", "data.workers=0"]
    cfg = load_config("tiny-motion", overrides)
    torch.manual_seed(cfg.train.seed)  # the trainer's own initial weights (vsyn.train.loop.setup seeds the same way)
    untrained = build_generator(cfg.model).eval()
    assert loop.run(cfg) == loop.EXIT_DONE
    trained, _ = load_generator(cfg.run_dir, ema=False)
    data = held_out(16, cfg.model.resolution, cfg.model.frames)
    before = benchmark(untrained, [data], samples=2)["motion_leak"]
    after = benchmark(trained, [data], samples=2)["motion_leak"]
    assert after < before, (before, after)
    assert before > 0.05  # the untrained head moves much of the ground: the comparison means something
