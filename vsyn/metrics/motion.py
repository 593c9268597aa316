"""Motion metrics against ground truth (procedural clips: true flow and static mask known exactly).

One implementation behind `vsyn eval --metrics motion`, the trainer's snapshot metrics and bench/motion.py. For each
real clip the generator animates frame 0, K times for a stochastic model (different noise), and every metric is
taken over frames 1..T-1 of the 8-bit clip a user gets:

- static region (mask 1): `motion_leak`, the share of (pixel, frame) pairs whose change from frame 0 exceeds
  `LEAK_LEVELS` = 12 of 255 in some channel, and `motion_static_change`, the mean |x_t - x_0| (8-bit levels);
- moving region (mask 0, less a `BORDER`-pixel frame where content enters the view and an `EDGE`-pixel margin
  along the static region, where the estimator's patches straddle two layers), flow estimated frame to frame
  by OpenCV DIS on the generated clip and, with the same estimator, on the true clip:
  `motion_speed_ratio`, calibrated: sum |flow(generated)| / sum |flow(true clip)| (1 is right, 0 a frozen video);
  `motion_epe`, endpoint error vs the true flow (px/frame; per clip over its measured pixels and frames, then the
  mean over samples and clips) and `motion_epe_bestk`, the best of the K samples per clip; `motion_dir_cos`, the cosine between the estimated and the true flow fields taken as
  whole vectors (1: same directions at matching speeds' proportions, 0: frozen or unrelated, -1: reversed), mean
  and `motion_dir_cos_bestk`; `motion_dir_cos_pixel`, the mean per-pixel cosine (directions below
  `PIXEL_SPEED_FLOOR` px/frame count as no direction);
- coherence: `motion_warp_error`, mean |x_t - x_{t+1} sampled at p + flow_t(p)| with the flow estimated on the
  generated clip itself (8-bit levels, whole frame less the border): low when the clip is one image moving, high
  when it flickers or shuffles;
- `motion_psnr_moving` (dB, moving region vs the true frames) and `motion_frame0_psnr` (frame 0 vs the input;
  100 dB = copied exactly);
- `motion_seed_spread`, a diagnostic with no right value: how differently the K futures of one image move,
  1 - |sum_k m_k| / sum_k |m_k| with m_k sample k's mean estimated flow over the moving region (0: every future
  moves the same way -- the latent noise changes nothing; 1 - |2p - 1| for a share p of two opposite futures;
  0.69 on average for K = 8 independent random directions); NaN for a clip whose K samples are all frozen;
- `motion_score`, the selection score (lower is better): leak + min(|log2 speed ratio|, 1) + (1 - best-of-K
  direction cosine) / 2; each term is 0 when right and about 1 when badly wrong;
- references that depend on the data only: `motion_floor_epe` (the estimator's own EPE on the true clips),
  `motion_floor_speed_ratio` (estimated / true speed on the true clips) and `motion_floor_warp_error` (the true
  clips' warp error).

Conventions (docs/contracts.md): flow (T-1, 2, H, W), dx then dy, px per frame, forward (frame t -> t+1, at frame t's
pixel positions); mask (H, W) 1 = static.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from vsyn.metrics.psnr import MSE_FLOOR, as_unit, psnr_frames
from vsyn.metrics.utils import all_gather_rows, local_share, to_uint8_values, video_fn

ESTIMATOR = "OpenCV DIS optical flow (PRESET_FAST, grayscale, native resolution)"
LEAK_LEVELS = 12  # a static pixel 'leaks' when it moves more than this many 8-bit levels from frame 0
BORDER = 4  # px excluded at the frame's edge from flow metrics (content enters the view there)
EDGE = 3  # px: flow metrics skip moving pixels this close to the static region, where the estimator's patches
# straddle a moving and a still layer (on the true procedural clips: EPE 0.40 -> 0.35 px, speed 0.77 -> 0.93)
FIELD_SPEED_FLOOR = 0.01  # px/frame: an RMS speed below this counts as no motion in the field cosine
PIXEL_SPEED_FLOOR = 0.05  # px/frame: a pixel slower than this has no direction in the per-pixel cosine
MOTION_SAMPLES = 8  # K: samples per clip for a stochastic generator

# per-clip row layout (float64), then T-1 per-step PSNR columns
COLUMNS = ("samples", "leak_count", "static_abs", "static_count", "speed_fake", "speed_real", "epe_mean", "epe_best",
           "cos_mean", "cos_best", "cos_pixel", "warp", "interior_count", "psnr_moving", "frame0_psnr", "floor_epe",
           "floor_warp", "floor_interior_count", "floor_speed", "true_speed", "seed_spread")
_C = {name: i for i, name in enumerate(COLUMNS)}
KEYS = ("motion_leak", "motion_static_change", "motion_speed_ratio", "motion_epe", "motion_epe_bestk",
        "motion_dir_cos", "motion_dir_cos_bestk", "motion_dir_cos_pixel", "motion_warp_error", "motion_psnr_moving",
        "motion_frame0_psnr", "motion_score", "motion_floor_epe", "motion_floor_speed_ratio",
        "motion_floor_warp_error", "motion_seed_spread")

_local = threading.local()


def _dis(gray0: np.ndarray, gray1: np.ndarray) -> np.ndarray:
    """One DIS estimate (H, W, 2); one estimator object per thread (they hold state)."""
    import cv2

    if not hasattr(_local, "dis"):
        _local.dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_FAST)
    return _local.dis.calc(gray0, gray1, None)


def _gray(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, H, W) uint8 luma (Rec. 601, like cv2.COLOR_RGB2GRAY)."""
    x = frames.to(torch.float32).cpu()
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def estimate_flow(frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
    """Dense forward flow (N, 2, H, W) float32 in px from frame0 to frame1, both (N, 3, H, W) uint8 (or float in
    [0, 1], rounded to 8 bit first). OpenCV DIS on grayscale, deterministic; pairs run on a thread pool (OpenCV
    releases the GIL). On procedural clips its own EPE is ~0.4 px/frame (`motion_floor_epe` reports it per run)."""
    a, b = _gray(_as_uint8(frame0)), _gray(_as_uint8(frame1))
    workers = min(16, os.cpu_count() or 1)
    if workers > 1 and len(a) > 1:
        with ThreadPoolExecutor(workers) as pool:
            flows = list(pool.map(_dis, a, b))
    else:
        flows = [_dis(x, y) for x, y in zip(a, b)]
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.uint8 else to_uint8_values(x).to(torch.uint8)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample img (N, C, H, W) at p + flow(p) (bilinear, border clamp): frame t+1 seen through frame t's forward
    flow, which is frame t when the flow is right."""
    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=img.dtype),
                            torch.arange(w, device=img.device, dtype=img.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


def _flows(video: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 -> (B, T-1, 2, H, W) float32 estimated frame-to-frame flow."""
    b, t = video.shape[:2]
    est = estimate_flow(video[:, :-1].reshape(-1, *video.shape[2:]), video[:, 1:].reshape(-1, *video.shape[2:]))
    return est.reshape(b, t - 1, 2, *video.shape[-2:])


def _wsum(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B,) float64 sum over frames and pixels of x (B, T, H, W) * weight (B or 1, 1, H, W)."""
    return (x * weight).sum(dim=(1, 2, 3), dtype=torch.float64)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel dot product of two flows (..., 2, H, W) -> (..., H, W)."""
    return a[..., 0, :, :] * b[..., 0, :, :] + a[..., 1, :, :] * b[..., 1, :, :]


def _norm(a: torch.Tensor) -> torch.Tensor:
    return _dot(a, a).sqrt()


def _warp_error(video: torch.Tensor, est: torch.Tensor, interior: torch.Tensor) -> torch.Tensor:
    """(B,) sum over frames and interior pixels of mean_c |x_t - warp(x_{t+1}, est_t)|, in 8-bit levels."""
    b, t = video.shape[:2]
    x = video.float()
    nxt = warp(x[:, 1:].reshape(-1, *x.shape[2:]), est.reshape(-1, *est.shape[2:])).reshape(b, t - 1, *x.shape[2:])
    return _wsum((nxt - x[:, :-1]).abs().mean(dim=2), interior)


def _field_cos(est: torch.Tensor, true: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B,) cosine between two flow fields (B, T-1, 2, H, W) as whole vectors over the weighted pixels."""
    n = (weight.sum(dim=(1, 2, 3)).double() * est.shape[1]).clamp_min(1)
    rms_e = (_wsum(_dot(est, est), weight) / n).sqrt().clamp_min(FIELD_SPEED_FLOOR)
    rms_g = (_wsum(_dot(true, true), weight) / n).sqrt().clamp_min(FIELD_SPEED_FLOOR)
    return _wsum(_dot(est, true), weight) / (n * rms_e * rms_g)


def _mean_flow(est: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, 2) float64 mean flow vector over frames and weighted pixels of est (B, T-1, 2, H, W)."""
    n = (weight.sum(dim=(1, 2, 3)).double() * est.shape[1]).clamp_min(1)
    return (est * weight[:, None]).sum(dim=(1, 3, 4), dtype=torch.float64) / n[:, None]


def _seed_spread(means: list[torch.Tensor]) -> torch.Tensor:
    """(B,) 1 - |sum_k m_k| / sum_k |m_k| over the K samples' mean flows m_k (B, 2); NaN when all are frozen."""
    m = torch.stack(means)  # (K, B, 2)
    lengths = m.norm(dim=2).sum(dim=0)
    spread = (1 - m.sum(dim=0).norm(dim=1) / lengths.clamp_min(1e-12)).clamp_min(0)  # >= 0 but for rounding
    return torch.where(lengths > len(means) * FIELD_SPEED_FLOOR, spread, math.nan)


def _pixel_cos(est: torch.Tensor, true: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B,) mean over frames and weighted pixels of the per-pixel cosine of two flows."""
    n = (weight.sum(dim=(1, 2, 3)).double() * est.shape[1]).clamp_min(1)
    norm = _norm(est).clamp_min(PIXEL_SPEED_FLOOR) * _norm(true).clamp_min(PIXEL_SPEED_FLOOR)
    return _wsum(_dot(est, true) / norm, weight) / n


def _psnr_region(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, T) PSNR in dB over the pixels where region (B, 1, H, W) is 1; NaN where the region is empty."""
    sq = (as_unit(fake) - as_unit(real)).pow(2).mean(dim=2)  # (B, T, H, W)
    count = region.sum(dim=(1, 2, 3))
    mse = (sq * region).sum(dim=(2, 3)) / count.clamp_min(1)[:, None]
    out = 10 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))
    return torch.where(count[:, None] > 0, out, torch.full_like(out, float("nan")))


def clip_rows(samples: list[torch.Tensor], real: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor,
              border: int = BORDER, edge: int = EDGE) -> torch.Tensor:
    """Per-clip sums for one batch -> (B, len(COLUMNS) + T-1) float64 rows (aggregated by `summarize` after
    gathering over ranks). samples: K generated clips, each (B, T, 3, H, W) uint8; real: (B, T, 3, H, W) uint8;
    flow: true (B, T-1, 2, H, W); mask: (B, H, W) or (B, 1, H, W), 1 = static."""
    real = _as_uint8(real).cpu()
    b, t, _, h, w = real.shape
    static = (mask.reshape(b, 1, h, w) > 0).to(torch.float32).cpu()
    inner = torch.zeros(1, 1, h, w, dtype=torch.float32)
    inner[..., border:h - border, border:w - border] = 1
    near_static = F.max_pool2d(static, 2 * edge + 1, stride=1, padding=edge) if edge else static
    moving = (1 - near_static) * inner
    true = flow[:, : t - 1].to(torch.float32).cpu()
    n_static, n_moving = static.sum(dim=(1, 2, 3)).double(), moving.sum(dim=(1, 2, 3)).double()
    n_inner = inner.sum().double().expand(b)
    # per-clip means over the measured moving pixels; NaN for a clip without any (skipped by the means over clips)
    per_moving = torch.where(n_moving > 0, 1 / (n_moving * (t - 1)).clamp_min(1), torch.full_like(n_moving, math.nan))

    est_real = _flows(real)
    speed_real = _wsum(_norm(est_real), moving)
    floor_epe = _wsum(_norm(est_real - true), moving) * per_moving
    floor_warp = _warp_error(real, est_real, inner)
    true_speed = _wsum(_norm(true), moving)

    per_sample = []
    for fake in samples:
        fake = _as_uint8(fake).cpu()
        if fake.shape != real.shape:
            raise ValueError(f"generated clip {tuple(fake.shape)} vs real {tuple(real.shape)}")
        x = fake.to(torch.int16)
        change = (x[:, 1:] - x[:, :1]).abs()  # (B, T-1, 3, H, W) in 8-bit levels
        leak = _wsum((change.amax(dim=2) > LEAK_LEVELS).float(), static)
        static_abs = _wsum(change.float().mean(dim=2), static)
        est = _flows(fake)
        per_sample.append(dict(
            leak=leak, static_abs=static_abs, speed=_wsum(_norm(est), moving),
            epe=_wsum(_norm(est - true), moving) * per_moving,
            cos=torch.where(n_moving > 0, _field_cos(est, true, moving), math.nan),
            cos_pixel=torch.where(n_moving > 0, _pixel_cos(est, true, moving), math.nan),
            mean_flow=_mean_flow(est, moving),
            warp=_warp_error(fake, est, inner),
            psnr_t=psnr_frames(fake[:, 1:], real[:, 1:]).double(),
            psnr_moving=_psnr_region(fake[:, 1:], real[:, 1:], (1 - static).double()).nanmean(dim=1),
            frame0=psnr_frames(fake[:, 0], real[:, 0]).double(),
        ))
    k = len(per_sample)

    def total(key: str) -> torch.Tensor:
        return torch.stack([s[key] for s in per_sample]).sum(dim=0)

    def mean(key: str) -> torch.Tensor:
        return torch.stack([s[key] for s in per_sample]).mean(dim=0)

    cols = {
        "samples": torch.full((b,), float(k), dtype=torch.float64),
        "leak_count": total("leak"), "static_abs": total("static_abs"), "static_count": k * (t - 1) * n_static,
        "speed_fake": total("speed"), "speed_real": k * speed_real,
        "epe_mean": mean("epe"), "epe_best": torch.stack([s["epe"] for s in per_sample]).amin(dim=0),
        "cos_mean": mean("cos"), "cos_best": torch.stack([s["cos"] for s in per_sample]).amax(dim=0),
        "cos_pixel": mean("cos_pixel"), "warp": total("warp"), "interior_count": k * (t - 1) * n_inner,
        "psnr_moving": mean("psnr_moving"), "frame0_psnr": mean("frame0"),
        "floor_epe": floor_epe, "floor_warp": floor_warp,
        "floor_interior_count": (t - 1) * n_inner, "floor_speed": speed_real, "true_speed": true_speed,
        "seed_spread": torch.where(n_moving > 0, _seed_spread([s["mean_flow"] for s in per_sample]), math.nan),
    }
    rows = torch.stack([cols[c].double() for c in COLUMNS], dim=1)
    return torch.cat([rows, mean("psnr_t")], dim=1)


def summarize(rows: torch.Tensor) -> dict[str, float]:
    """The motion metrics (`KEYS`) from the per-clip rows of all clips."""
    s = rows[:, : len(COLUMNS)].double().sum(dim=0)

    def ratio(num: str, den: str) -> float:
        return float(s[_C[num]] / s[_C[den]]) if s[_C[den]] > 0 else float("nan")

    def mean(col: str) -> float:
        return float(rows[:, _C[col]].double().nanmean())

    speed = ratio("speed_fake", "speed_real")
    cos_best = mean("cos_best")
    leak = ratio("leak_count", "static_count")
    return {
        "motion_leak": leak,
        "motion_static_change": ratio("static_abs", "static_count"),
        "motion_speed_ratio": speed,
        "motion_epe": mean("epe_mean"),
        "motion_epe_bestk": mean("epe_best"),
        "motion_dir_cos": mean("cos_mean"),
        "motion_dir_cos_bestk": cos_best,
        "motion_dir_cos_pixel": mean("cos_pixel"),
        "motion_warp_error": ratio("warp", "interior_count"),
        "motion_psnr_moving": mean("psnr_moving"),
        "motion_frame0_psnr": mean("frame0_psnr"),
        "motion_score": motion_score(leak, speed, cos_best),
        "motion_floor_epe": mean("floor_epe"),
        "motion_floor_speed_ratio": ratio("floor_speed", "true_speed"),
        "motion_floor_warp_error": ratio("floor_warp", "floor_interior_count"),
        "motion_seed_spread": mean("seed_spread"),
    }


def motion_score(leak: float, speed_ratio: float, dir_cos_bestk: float) -> float:
    """Lower is better, 0 at perfection: leak fraction + speed error in octaves (capped at 1: a factor 2 off, or
    frozen) + direction deficit (1 - cosine) / 2. Static ground that stays still, the right speed and the right
    direction for at least one of the K futures -- what `best` selects on."""
    speed_term = 1.0 if not speed_ratio > 0 else min(abs(math.log2(speed_ratio)), 1.0)
    return leak + speed_term + (1.0 - dir_cos_bestk) / 2


class TrueClip:
    """Reference 'generator' that returns the true clip (optionally through H.264 as a user would receive it): the
    rows every model is compared with. `evaluate` and `benchmark` hand it the real clip instead of frame 0."""

    reads_real_clip = True

    def __init__(self, mp4: bool = False, fps: float = 25.0) -> None:
        self.mp4, self.fps = mp4, fps

    def __call__(self, real: torch.Tensor) -> torch.Tensor:
        real = _as_uint8(real).cpu()
        if not self.mp4:
            return real.clone()
        from vsyn.video import decode_video, encode_video

        out = []
        for clip in real:
            frames = clip.permute(0, 2, 3, 1).contiguous().numpy()
            decoded = decode_video(encode_video(frames, fps=self.fps, fmt="mp4"))[:, : frames.shape[1], : frames.shape[2]]
            out.append(torch.from_numpy(decoded).permute(0, 3, 1, 2))
        return torch.stack(out)


def is_stochastic(generator: object) -> bool:
    """True for a module whose `sample_noise` draws noise (several futures per image)."""
    sample = getattr(generator, "sample_noise", None)
    return isinstance(generator, torch.nn.Module) and callable(sample) and sample(1) is not None


def generate_samples(generator: object, fn, real: torch.Tensor, frames: int, k: int) -> list[torch.Tensor]:
    """K uint8 (B, frames, 3, H, W) clips for the real clips' frame 0 (or the reference clip itself)."""
    if getattr(generator, "reads_real_clip", False):
        return [generator(real[:, :frames])]
    images = real[:, 0].float() / 255
    return [to_uint8_values(fn(images, frames)).to(torch.uint8) for _ in range(k)]


def benchmark(generator: object, loader: Iterable[dict], *, n: int | None = None, device: str | torch.device = "cpu",
              seed: int = 0, frames: int | None = None, samples: int = MOTION_SAMPLES, border: int = BORDER) -> dict:
    """The motion metrics over `n` clips (default: all) of a loader yielding `video` uint8 (B,T,3,H,W), `flow`
    (B,T-1,2,H,W) and `mask` (B,H,W). `generator`: a vsyn generator module, a callable `(images (B,3,H,W) [0,1],
    num_frames) -> (B,T,3,H,W) [0,1]`, or a `TrueClip`. `frames`: clip length T (default: the loader's). With
    torch.distributed initialised each rank takes its share of `n` from its own loader and rows are all-gathered.
    Returns the `KEYS` values plus clips, samples per clip, PSNR per time step and the estimator's name."""
    fn = None if getattr(generator, "reads_real_clip", False) else video_fn(generator, seed=seed, device=device)
    k = samples if is_stochastic(generator) else 1
    want = local_share(n) if n is not None else None
    rows = []
    seen = 0
    for batch in loader:
        if "flow" not in batch or "mask" not in batch:
            raise ValueError("the motion metrics need procedural clips with 'flow' and 'mask'")
        real = torch.as_tensor(batch["video"])
        if want is not None:
            real = real[: want - seen]
        b = real.shape[0]
        if b == 0:
            break
        t = frames or real.shape[1]
        real = real[:, :t].to(device)
        fakes = generate_samples(generator, fn, real, t, k)
        rows.append(clip_rows(fakes, real, torch.as_tensor(batch["flow"])[:b], torch.as_tensor(batch["mask"])[:b],
                              border))
        seen += b
        if want is not None and seen >= want:
            break
    local = torch.cat(rows) if rows else torch.zeros(0, len(COLUMNS))
    allrows = all_gather_rows(local.to(device)).cpu().double()
    if allrows.shape[0] == 0:
        raise ValueError("the motion benchmark got no clips")
    out = summarize(allrows)
    psnr_t = allrows[:, len(COLUMNS):].mean(dim=0)
    out.update(clips=int(allrows.shape[0]), samples=k, psnr_t_db=[round(float(v), 4) for v in psnr_t],
               estimator=ESTIMATOR)
    return out


TABLE = (("motion_leak", "static leak (share)", "{:.4f}"), ("motion_static_change", "static change (8-bit)", "{:.2f}"),
         ("motion_speed_ratio", "speed ratio (calibrated, 1 best)", "{:.3f}"), ("motion_epe", "EPE (px/frame)", "{:.3f}"),
         ("motion_epe_bestk", "EPE best-of-K", "{:.3f}"), ("motion_dir_cos", "dir cos", "{:.3f}"),
         ("motion_dir_cos_bestk", "dir cos best-of-K", "{:.3f}"), ("motion_dir_cos_pixel", "dir cos per px", "{:.3f}"),
         ("motion_warp_error", "warp error (8-bit)", "{:.2f}"), ("motion_psnr_moving", "PSNR moving (dB)", "{:.2f}"),
         ("motion_frame0_psnr", "frame 0 PSNR (dB)", "{:.2f}"), ("motion_seed_spread", "seed spread", "{:.3f}"),
         ("motion_score", "motion score", "{:.3f}"))


def format_table(rows: dict[str, dict]) -> str:
    """Markdown table, one row per named result of `benchmark`."""
    head = "| model | clips x K | " + " | ".join(label for _, label, _ in TABLE) + " |"
    lines = [head, "|" + "---|" * (len(TABLE) + 2)]
    for name, r in rows.items():
        cells = [fmt.format(r[key]) for key, _, fmt in TABLE]
        lines.append(f"| {name} | {r['clips']} x {r['samples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
