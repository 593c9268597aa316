"""Motion benchmark: the flow estimator on exact translations, and the benchmark's reference rows on procedural
clips (copy-frame-0: zero speed, zero leakage; the true clip: error equal to the estimator's own floor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsyn.metrics.motion import _warp, benchmark, estimate_flow, format_table
from vsyn.metrics.utils import copy_first_frame

procedural = pytest.importorskip("shards.procedural")


def test_estimates_a_subpixel_translation():
    torch.manual_seed(0)
    tex = F.avg_pool2d(F.avg_pool2d(torch.rand(1, 3, 96, 96), 5, 1, 2), 5, 1, 2)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    true = torch.tensor([1.3, -0.6]).view(1, 2, 1, 1).expand(1, 2, 96, 96)
    moved = _warp(tex, -true)  # frame1(p) = frame0(p - d): forward flow d
    est = estimate_flow(tex, moved)[0, :, 16:-16, 16:-16]
    assert est[0].mean().item() == pytest.approx(1.3, abs=0.02)
    assert est[1].mean().item() == pytest.approx(-0.6, abs=0.02)
    assert (est - true[0, :, 16:-16, 16:-16]).pow(2).sum(0).sqrt().mean().item() < 0.06


def _loader(n=4, size=48, frames=6, batch=2):
    clips = [procedural.make_clip(seed, size, frames) for seed in range(n)]
    for i in range(0, n, batch):
        part = clips[i:i + batch]
        yield {"video": torch.from_numpy(np.stack([c["video"] for c in part])).permute(0, 1, 4, 2, 3).contiguous(),
               "flow": torch.from_numpy(np.stack([c["flow"] for c in part])),
               "mask": torch.from_numpy(np.stack([c["mask"] for c in part]))}


def test_copy_first_frame_row():
    r = benchmark(copy_first_frame, _loader(), n=4)
    assert r["clips"] == 4
    assert r["speed_ratio"] < 1e-4  # identical frames: the estimate is 0 up to float round-off in the warp
    assert r["leak_static_l1"] == 0.0 and r["drift_static_l1"] == 0.0
    assert 0.1 < r["epe_moving_px"] < 3  # = the mean true speed over the moving region
    assert len(r["psnr_t_db"]) == 5 and r["psnr_t_db"][0] > r["psnr_t_db"][-1]  # copying gets worse with time
    assert "copy" in format_table({"copy frame 0": r}).splitlines()[2]


def test_true_clip_row_equals_estimator_floor():
    clips = {}

    def oracle(images, num_frames):  # returns the real clip whose frame 0 it was given
        key = (images * 255).round().to(torch.uint8)
        return torch.stack([clips[k.numpy().tobytes()] for k in key])

    for batch in _loader():
        for v in batch["video"]:
            clips[v[0].numpy().tobytes()] = v.float() / 255
    r = benchmark(oracle, _loader(), n=4)
    assert r["epe_moving_px"] == pytest.approx(r["estimator_epe_real_px"], rel=1e-9)
    assert r["epe_moving_px"] < 0.6 and 0.5 < r["speed_ratio"] < 1.5
    assert r["leak_static_l1"] == 0.0  # the procedural ground is exactly static
    assert r["psnr_db"] == 100.0
