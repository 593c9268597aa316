"""The procedural generator: deterministic, well-typed, and its flow and mask tell the truth about its pixels."""

import time

import numpy as np
import pytest

from shards.procedural import generate_clips, make_clip

from .helpers import warp_back


@pytest.mark.parametrize("size,frames,water", [(64, 25, True), (48, 7, False), (128, 3, True)])
def test_shapes_and_dtypes(size, frames, water):
    clip = make_clip(3, size, frames, water=water)
    assert clip["video"].shape == (frames, size, size, 3) and clip["video"].dtype == np.uint8
    assert clip["flow"].shape == (frames - 1, 2, size, size) and clip["flow"].dtype == np.float32
    assert clip["mask"].shape == (size, size) and clip["mask"].dtype == np.uint8
    assert set(np.unique(clip["mask"])) == {0, 1}


def test_deterministic_by_seed():
    a, b, c = make_clip(7, 64, 9), make_clip(7, 64, 9), make_clip(8, 64, 9)
    for k in ("video", "flow", "mask"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["video"], c["video"])
    seeds = [clip["seed"] for clip in generate_clips(5, 32, 4, seed=1)]
    assert seeds == [clip["seed"] for clip in generate_clips(5, 32, 4, seed=1)]
    assert len(set(seeds)) == 5 and not set(seeds) & {clip["seed"] for clip in generate_clips(5, 32, 4, seed=2)}


def test_static_region_is_static_and_has_zero_flow():
    clip = make_clip(11, 64, 25)
    ground = clip["mask"].astype(bool)
    assert 0.1 < ground.mean() < 0.6
    assert (clip["video"][:, ground] == clip["video"][0, ground]).all()
    assert (clip["flow"][:, :, ground] == 0).all()
    moving = ~ground
    assert np.abs(clip["flow"][:, 0, moving]).min() > 0 or np.abs(clip["flow"][:, 1, moving]).min() > 0
    assert (np.abs(np.diff(clip["video"].astype(int), axis=0)).sum(-1)[:, moving] > 0).mean() > 0.1


@pytest.mark.parametrize("seed", range(6))
def test_sky_moves_as_the_flow_says(seed):
    """Frame t+1 warped back by frame t's flow matches frame t in the sky, far better than assuming no motion."""
    clip = make_clip(seed, 128, 6, water=False)
    video, flow = clip["video"], clip["flow"]
    ground = clip["mask"].astype(bool)
    # Sky pixels whose whole bilinear footprint stays in the sky and inside the frame.
    near_ground = np.zeros_like(ground)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            near_ground |= np.roll(ground, (dy, dx), axis=(0, 1))
    sky = ~near_ground
    sky[:3], sky[-3:], sky[:, :3], sky[:, -3:] = False, False, False, False
    assert sky.mean() > 0.2
    for t in range(len(flow)):
        warped = warp_back(video[t + 1], flow[t])
        err_flow = np.abs(warped - video[t])[sky].mean()
        err_still = np.abs(video[t + 1].astype(float) - video[t])[sky].mean()
        assert err_flow < 2.0 and err_flow < 0.35 * err_still, (t, err_flow, err_still)


def test_fast_enough_for_thousands_of_clips():
    start = time.perf_counter()
    n = sum(1 for _ in generate_clips(200, 64, 25))
    per_clip = (time.perf_counter() - start) / n
    assert per_clip < 0.03, f"{per_clip * 1e3:.1f} ms per 64 px x 25 frame clip"
