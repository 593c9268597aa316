"""Clips larger than the model are resized whole (aspect kept), never silently cropped; smaller ones are refused.

`fit` is checked against `vsyn.inference.fit_image` (what `vsyn animate` and the server do to a picture), its flow
against the pixels it moves, and the loader and the data probe end to end on real shards.
"""

from __future__ import annotations

import numpy as np
import pytest

from shards.procedural import make_clip
from vsyn.data import make_loader
from vsyn.data.clips import Clip, fit
from vsyn.data.probe import clip_size, fit_note
from vsyn.errors import VsynError
from vsyn.inference import fit_image

from .helpers import FRAMES, SIZE, warp_back


def _sky_error(video: np.ndarray, flow: np.ndarray, mask: np.ndarray, margin: int) -> float:
    """Mean |frame 1 warped back by flow 0 - frame 0| over the moving region, away from the borders."""
    sky = mask == 0
    sky[:margin] = sky[-margin:] = False
    sky[:, :margin] = sky[:, -margin:] = False
    sky &= np.roll(sky, margin, 0) & np.roll(sky, -margin, 0)
    return float(np.abs(warp_back(video[1], flow[0]) - video[0])[sky].mean())


def test_fit_resizes_the_whole_scene_and_keeps_flow_true():
    c = make_clip(1, 64, 3, water=False)
    small = fit(Clip(c["video"], c["flow"], c["mask"]), 32)
    assert small.video.shape == (3, 32, 32, 3) and small.flow.shape == (2, 2, 32, 32) and small.mask.shape == (32, 32)
    for t in range(3):  # the frames are animate's fit of each frame: the whole scene, not its centre quarter
        np.testing.assert_array_equal(small.video[t], fit_image(c["video"][t], 32))
    # the resized flow moves the resized pixels: better than no motion, and than flow left in 64 px units
    err = {k: _sky_error(small.video, small.flow * k, small.mask, 3) for k in (0, 1, 2)}
    assert err[1] < 0.8 * err[0] and err[1] < 0.8 * err[2], err
    assert set(np.unique(small.mask)) <= {0, 1} and abs(small.mask.mean() - c["mask"].mean()) < 0.05


def test_fit_scales_flow_by_each_axis_factor():
    """A uniform motion of (3, -2) px/frame on a 50x75 clip is (1.92, -1.28) px/frame at 32 px: scale 32/50."""
    flow = np.empty((2, 2, 50, 75), np.float32)
    flow[:, 0], flow[:, 1] = 3.0, -2.0
    small = fit(Clip(np.zeros((3, 50, 75, 3), np.uint8), flow, None), 32)
    np.testing.assert_allclose(small.flow[:, 0], 3.0 * 48 / 75, rtol=1e-6)  # 75 px -> 48 px wide
    np.testing.assert_allclose(small.flow[:, 1], -2.0 * 32 / 50, rtol=1e-6)


def test_fit_keeps_aspect_and_refuses_to_upscale():
    wide = Clip(np.zeros((2, 40, 80, 3), np.uint8))
    wide.video[:, :, 14:66] = 255  # a band a bit wider than the centre square
    assert fit(wide, 20).video.shape == (2, 20, 20, 3) and fit(wide, 20).video.min() >= 250  # no squashing
    with pytest.raises(ValueError, match="smaller than the requested 64"):
        fit(Clip(np.zeros((2, 32, 32, 3), np.uint8)), 64)


def test_loader_resizes_larger_clips_for_a_smaller_model(procedural_shards):
    size = SIZE // 2
    full = next(iter(make_loader(procedural_shards, frames=FRAMES, batch_size=2, mode="eval", workers=0)))
    small = next(iter(make_loader(procedural_shards, frames=FRAMES, batch_size=2, mode="eval", size=size,
                                  workers=0)))
    assert small["video"].shape == (2, FRAMES, 3, size, size) and small["__key__"] == full["__key__"]
    frames = full["video"].permute(0, 1, 3, 4, 2).numpy()
    expected = np.stack([[fit_image(f, size) for f in clip] for clip in frames])
    np.testing.assert_array_equal(small["video"].permute(0, 1, 3, 4, 2).numpy(), expected)


def test_probe_names_the_fit_or_refuses(procedural_shards, tmp_path):
    assert clip_size(procedural_shards) == (SIZE, SIZE)
    assert fit_note((SIZE, SIZE), SIZE, random_crop=False) is None
    assert "resized to 16 px on its short side" in fit_note((SIZE, SIZE), 16, random_crop=False)
    assert "random 16x16 crops" in fit_note((SIZE, SIZE), 16, random_crop=True)
    with pytest.raises(VsynError, match=r"clips are 32x32 px, smaller than model.resolution=64: pack them with "
                                         r"--size 64"):
        fit_note((SIZE, SIZE), 64, random_crop=False)
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(VsynError, match="no readable clips in .*empty.tar"):
        clip_size(str(tmp_path / "empty.tar"))
