"""Motion metrics against constructed clips with known answers: a pure translation (the true clip, twice as fast,
reversed), a still video, a shuffled video, a video that moves the static region, and best-of-K on a generator
with two futures. The flow estimator is OpenCV DIS; its own error on exact sub-pixel translations is checked too."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vsyn.metrics.motion import (BORDER, EDGE, LEAK_LEVELS, TrueClip, benchmark, estimate_flow, format_table,
                                 motion_score)
from vsyn.metrics.utils import copy_first_frame

SIZE, FRAMES, STATIC_ROWS = 48, 6, 12
VELOCITY = (0.8, -0.5)  # px/frame, dx then dy


def _texture(rng: np.random.Generator, n: int, cutoff: float = 0.12) -> np.ndarray:
    """A smooth periodic (n, n, 3) texture in [0.2, 0.8]: band-limited, so Fourier shifts are exact."""
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    spec = (rng.standard_normal((3, n, n)) + 1j * rng.standard_normal((3, n, n))) * (f < cutoff) * (f > 0)
    tex = np.fft.ifft2(spec).real
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return 0.2 + 0.6 * tex.transpose(1, 2, 0)


def _shift(tex: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """tex moved by (dx, dy) px: out(p) = tex(p - d), exactly, by a Fourier phase shift (periodic, band-limited)."""
    n = tex.shape[0]
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :]
    phase = np.exp(-2j * np.pi * (fx * dx + fy * dy))
    return np.fft.ifft2(np.fft.fft2(tex, axes=(0, 1)) * phase[..., None], axes=(0, 1)).real


def _translation_clip(seed: int, velocity=VELOCITY, frames=FRAMES) -> dict[str, np.ndarray]:
    """Moving texture above a static textured block (the bottom STATIC_ROWS rows, mask 1); true flow = velocity."""
    rng = np.random.default_rng(seed)
    sky, ground = _texture(rng, SIZE), _texture(rng, SIZE)
    video = np.stack([_shift(sky, velocity[0] * t, velocity[1] * t) for t in range(frames)])
    video[:, -STATIC_ROWS:] = ground[-STATIC_ROWS:]
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[-STATIC_ROWS:] = 1
    flow = np.zeros((frames - 1, 2, SIZE, SIZE), np.float32)
    flow[:, 0], flow[:, 1] = velocity
    flow[:, :, mask == 1] = 0
    return {"video": np.round(video * 255).astype(np.uint8), "flow": flow, "mask": mask}


def _batch(clips: list[dict]) -> dict:
    return {"video": torch.from_numpy(np.stack([c["video"] for c in clips])).permute(0, 1, 4, 2, 3).contiguous(),
            "flow": torch.from_numpy(np.stack([c["flow"] for c in clips])),
            "mask": torch.from_numpy(np.stack([c["mask"] for c in clips]))}


@pytest.fixture(scope="module")
def truth():
    return [_translation_clip(seed) for seed in range(2)]


class Replay:
    """A 'generator' that returns a prepared clip for each input image (looked up by frame 0)."""

    def __init__(self, clips: list[dict]) -> None:
        self.by_first = {c["video"][0].tobytes(): torch.from_numpy(c["video"]).permute(0, 3, 1, 2) for c in clips}

    def __call__(self, images: torch.Tensor, num_frames: int) -> torch.Tensor:
        keys = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return torch.stack([self.by_first[k.numpy().tobytes()][:num_frames].float() / 255 for k in keys])


def _score(generator, clips, **kw) -> dict:
    return benchmark(generator, [_batch(clips)], **kw)


def test_estimator_on_an_exact_subpixel_translation(truth):
    video = torch.from_numpy(truth[0]["video"]).permute(0, 3, 1, 2)
    est = estimate_flow(video[:-1], video[1:])[:, :, 6:-STATIC_ROWS - 6, 6:-6]
    assert est[:, 0].mean().item() == pytest.approx(VELOCITY[0], abs=0.05)
    assert est[:, 1].mean().item() == pytest.approx(VELOCITY[1], abs=0.05)
    assert torch.equal(estimate_flow(video[:2], video[:2]), torch.zeros(2, 2, SIZE, SIZE))  # still frames: zero


def test_true_clip_scores_its_own_floor(truth):
    r = _score(TrueClip(), truth)
    assert r["motion_speed_ratio"] == 1.0  # the same estimator on the same frames: exactly calibrated
    assert r["motion_epe"] == r["motion_floor_epe"] < 0.1  # a clean translation: the estimator is near exact
    assert r["motion_epe_bestk"] == r["motion_epe"] and r["motion_dir_cos_bestk"] == r["motion_dir_cos"]  # K = 1
    assert r["motion_warp_error"] == r["motion_floor_warp_error"]
    assert r["motion_leak"] == 0.0 and r["motion_static_change"] == 0.0
    assert r["motion_psnr_moving"] == 100.0 and r["motion_frame0_psnr"] == 100.0
    assert r["motion_dir_cos"] > 0.98 and r["motion_dir_cos_pixel"] > 0.98
    assert r["motion_floor_speed_ratio"] == pytest.approx(1.0, abs=0.05)
    assert r["motion_score"] == pytest.approx(motion_score(0.0, 1.0, r["motion_dir_cos_bestk"]))
    assert r["clips"] == 2 and r["samples"] == 1 and "true clip" in format_table({"true clip": r})


def test_twice_as_fast_and_reversed(truth):
    fast = [_translation_clip(s, (2 * VELOCITY[0], 2 * VELOCITY[1])) for s in range(2)]
    back = [_translation_clip(s, (-VELOCITY[0], -VELOCITY[1])) for s in range(2)]
    r_fast = _score(Replay(fast), truth)
    assert r_fast["motion_speed_ratio"] == pytest.approx(2.0, rel=0.08)
    assert r_fast["motion_dir_cos"] > 0.95
    assert r_fast["motion_epe"] == pytest.approx(math.hypot(*VELOCITY), rel=0.15)  # off by one velocity
    r_back = _score(Replay(back), truth)
    assert r_back["motion_dir_cos"] < -0.95 and r_back["motion_dir_cos_pixel"] < -0.95
    assert r_back["motion_speed_ratio"] == pytest.approx(1.0, rel=0.08)
    assert r_back["motion_epe"] == pytest.approx(2 * math.hypot(*VELOCITY), rel=0.1)
    assert r_back["motion_score"] == pytest.approx(1.0, abs=0.1)  # right speed, still ground, reversed


def test_still_video(truth):
    r = _score(copy_first_frame, truth)
    assert r["motion_leak"] == 0.0 and r["motion_static_change"] == 0.0
    assert r["motion_warp_error"] < 1e-4  # zero flow: only float32 round-off in the sampling grid
    assert r["motion_speed_ratio"] == 0.0 and r["motion_dir_cos"] == 0.0 and r["motion_dir_cos_pixel"] == 0.0
    assert r["motion_epe"] == pytest.approx(math.hypot(*VELOCITY), rel=1e-6)  # estimated 0: the error is the speed
    assert r["motion_score"] == 1.5  # 0 leak + 1 (frozen) + (1 - 0) / 2
    assert r["motion_frame0_psnr"] == 100.0
    # PSNR on the moving region, independently: frames 1..T-1 vs the true frames over mask 0, float64
    v = np.stack([c["video"] for c in truth]).astype(np.float64) / 255
    moving = np.stack([c["mask"] for c in truth]) == 0
    mse = ((v[:, 1:] - v[:, :1]) ** 2).mean(-1)  # (B, T-1, H, W)
    expected = np.mean([10 * np.log10(1 / mse[b][:, moving[b]].mean(-1)) for b in range(len(truth))])
    assert r["motion_psnr_moving"] == pytest.approx(expected, rel=1e-9)


def test_shuffled_video(truth):
    """Frames 0, 3, 1, 5, 2, 4 of a translation: consecutive frames are 3, -2, 4, -3, 2 steps apart, so the speed
    ratio is mean |k| = 2.8, the field cosine mean(k) / rms(k) = 0.8 / 2.898 and the EPE mean |k - 1| = 2.6 steps."""
    order = [0, 3, 1, 5, 2, 4]  # frame 0 stays: the input is kept, the motion is scrambled
    k = np.diff(order)
    shuffled = [{**c, "video": c["video"][order]} for c in truth]
    r = _score(Replay(shuffled), truth)
    assert r["motion_leak"] == 0.0 and r["motion_frame0_psnr"] == 100.0  # the ground stays, frame 0 is the input
    assert r["motion_speed_ratio"] == pytest.approx(np.abs(k).mean(), rel=0.08)
    assert r["motion_dir_cos"] == pytest.approx(k.mean() / np.sqrt((k**2).mean()), abs=0.06)
    assert r["motion_epe"] == pytest.approx(np.abs(k - 1).mean() * math.hypot(*VELOCITY), rel=0.1)
    assert r["motion_psnr_moving"] < _score(TrueClip(), truth)["motion_psnr_moving"] - 50


def test_video_that_moves_the_static_region(truth):
    """+13 levels on the left half of the ground and +12 (not above the 12-level threshold) on the right half,
    from frame 1 on: leak = the left half's share exactly; mean change = 12.5 levels exactly."""
    assert LEAK_LEVELS == 12
    moved = []
    for c in truth:
        v = c["video"].astype(np.int16)
        v[1:, -STATIC_ROWS:, : SIZE // 2] += 13
        v[1:, -STATIC_ROWS:, SIZE // 2:] += 12
        assert v.max() <= 255
        moved.append({**c, "video": v.astype(np.uint8)})
    r = _score(Replay(moved), truth)
    assert r["motion_leak"] == 0.5 and r["motion_static_change"] == 12.5
    # the sky is untouched and the flow metrics skip the ground (DIS's coarse levels see the ground's change a little)
    assert r["motion_speed_ratio"] == pytest.approx(1.0, abs=0.02)
    assert r["motion_score"] == pytest.approx(motion_score(0.5, r["motion_speed_ratio"], r["motion_dir_cos_bestk"]))
    assert r["motion_score"] == pytest.approx(0.5 + (1 - r["motion_dir_cos_bestk"]) / 2, abs=0.01)


class TwoFutures(torch.nn.Module):
    """A stochastic 'generator': noise > 0 plays the true clip, noise <= 0 the reversed motion."""

    frames = FRAMES

    def __init__(self, forward_clips: list[dict], backward_clips: list[dict]) -> None:
        super().__init__()
        self.forward_clips, self.backward_clips = Replay(forward_clips), Replay(backward_clips)
        self.choices: list[bool] = []

    def sample_noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(batch, 1, generator=generator)

    def forward(self, images: torch.Tensor, num_frames: int | None = None, noise: torch.Tensor | None = None):
        ahead = noise[:, 0] > 0
        self.choices.extend(ahead.tolist())
        a, b = self.forward_clips(images, num_frames), self.backward_clips(images, num_frames)
        return torch.where(ahead[:, None, None, None, None], a, b)


def test_best_of_k_finds_the_right_future(truth):
    back = [_translation_clip(s, (-VELOCITY[0], -VELOCITY[1])) for s in range(2)]
    gen = TwoFutures(truth, back)
    r = _score(gen, truth, samples=8, seed=3)
    assert r["samples"] == 8 and len(gen.choices) == 16
    ahead = np.array(gen.choices).reshape(8, 2)  # (sample, clip)
    assert ahead.any(axis=0).all() and not ahead.all()  # seed 3: each clip gets the right future at least once
    assert r["motion_dir_cos_bestk"] > 0.98 and r["motion_epe_bestk"] < 0.1
    share = ahead.mean()  # the mean over samples mixes both futures
    assert r["motion_dir_cos"] == pytest.approx(share * 1 + (1 - share) * -1, abs=0.05)
    assert r["motion_epe"] > 0.5
    single = _score(TwoFutures(truth, back), truth, samples=1, seed=3)
    assert single["motion_dir_cos_bestk"] == single["motion_dir_cos"]
    assert single["motion_seed_spread"] == 0.0  # one future: nothing to differ from


def test_seed_spread_counts_how_differently_the_futures_move(truth):
    """Two opposite futures at the same speed in shares p and 1 - p: 1 - |sum_k m_k| / sum_k |m_k| = 1 - |2p - 1|
    per clip, whatever the estimator's small error (it is the same on both futures up to the sign)."""
    back = [_translation_clip(s, (-VELOCITY[0], -VELOCITY[1])) for s in range(2)]
    gen = TwoFutures(truth, back)
    r = _score(gen, truth, samples=8, seed=3)
    ahead = np.array(gen.choices).reshape(8, 2).mean(axis=0)  # share p of forward futures, per clip
    expected = np.mean(1 - np.abs(2 * ahead - 1))
    assert 0 < expected < 1
    assert r["motion_seed_spread"] == pytest.approx(expected, abs=0.03)
    same = _score(TwoFutures(truth, truth), truth, samples=8, seed=3)  # noise read, but both futures alike
    assert same["motion_seed_spread"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(_score(copy_first_frame, truth)["motion_seed_spread"])  # frozen: no direction to compare


def test_a_clip_without_moving_pixels_counts_for_the_static_metrics_only(truth):
    still = {**truth[1], "mask": np.ones((SIZE, SIZE), np.uint8), "flow": np.zeros_like(truth[1]["flow"])}
    both, alone = _score(TrueClip(), [truth[0], still]), _score(TrueClip(), truth[:1])
    for key in ("motion_epe", "motion_dir_cos", "motion_dir_cos_pixel", "motion_psnr_moving", "motion_floor_epe"):
        assert both[key] == pytest.approx(alone[key], rel=1e-12), key


def test_border_and_edge_exclusions_are_documented_values():
    assert (BORDER, EDGE) == (4, 3)
