"""Ground-truth motion benchmark on procedural clips (true flow and static mask known exactly).

For each real clip, the generator animates frame 0; we then
- estimate the motion of the generated clip frame to frame with a classical dense optical flow (coarse-to-fine
  Lucas-Kanade with Gaussian windows, below) and compare it with the true flow: endpoint error (EPE, px/frame) over
  the moving region, plus the speed ratio mean|est| / mean|true| (0 for a frozen video);
- measure leakage into the static region: mean |x_t - x_{t-1}| (per frame step) and mean |x_t - x_0| (drift) over
  the static pixels, in 8-bit levels;
- PSNR of every generated frame against the true frame, per time step.
The same flow estimator on the *real* clip gives its own error floor (`estimator_epe_real_px`): a generator cannot
be judged more precisely than that.

Conventions (docs/contracts.md): flow (T-1, 2, H, W), dx then dy, px per frame, forward (frame t -> t+1, at frame t's
pixel positions); mask (H, W) 1 = static. EPE and speed ignore a `border`-pixel frame where content enters the view.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from vsyn.metrics.psnr import as_unit, psnr_frames
from vsyn.metrics.utils import all_gather_rows, local_share, to_uint8_values, video_fn

ESTIMATOR = "pyramidal-lucas-kanade(levels=3, iters=5, sigma=3.0, presmooth=1.0, max_step=1.0, flow smoothing)"


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) [0,1] -> (N, 1, H, W) Rec. 601 luma."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _gauss(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r = g.numel() // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))


def _warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample img at p + flow(p) (bilinear, border clamp): aligns frame t+1 to frame t for forward flow."""
    n, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=img.dtype),
                            torch.arange(w, device=img.device, dtype=img.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def estimate_flow(frame0: torch.Tensor, frame1: torch.Tensor, *, levels: int = 3, iters: int = 5,
                  sigma: float = 3.0, presmooth: float = 1.0, reg: float = 1e-4, max_step: float = 1.0) -> torch.Tensor:
    """Dense forward flow (N, 2, H, W) in px from frame0 to frame1, both (N, 3, H, W) in [0, 1].

    Coarse-to-fine iterative Lucas-Kanade: at each pyramid level, warp frame1 by the current flow, solve the 2x2
    Gaussian-weighted (`sigma`) normal equations per pixel for an increment, clamp it to `max_step` px (a level only
    has to fix about a pixel), add it, and smooth the flow with the same Gaussian. Without the clamp and smoothing,
    iterating at coarse levels diverges where the structure tensor is ill-conditioned. `reg` (Tikhonov) keeps
    textureless pixels from dividing by ~0; `presmooth` damps per-frame flicker such as water glints. Float32,
    deterministic. On a 1.3/-0.6 px translation of a smooth texture: mean EPE ~0.04 px.
    """
    i0 = _gray(frame0.float())
    i1 = _gray(frame1.float())
    if presmooth > 0:
        k = _gauss(presmooth, i0.device, i0.dtype)
        i0, i1 = _blur(i0, k), _blur(i1, k)
    pyr0, pyr1 = [i0], [i1]
    for _ in range(levels - 1):
        if min(pyr0[-1].shape[-2:]) < 16:
            break
        pyr0.append(F.avg_pool2d(pyr0[-1], 2))
        pyr1.append(F.avg_pool2d(pyr1[-1], 2))
    g = _gauss(sigma, i0.device, i0.dtype)
    n = i0.shape[0]
    flow = torch.zeros(n, 2, *pyr0[-1].shape[-2:], device=i0.device, dtype=i0.dtype)
    for a, b in zip(reversed(pyr0), reversed(pyr1)):
        h, w = a.shape[-2:]
        if flow.shape[-2:] != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * 2
        for _ in range(iters):
            bw = _warp(b, flow)
            p = F.pad((a + bw) / 2, (1, 1, 1, 1), mode="replicate")
            ix = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
            iy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
            it = bw - a
            sxx, sxy, syy = _blur(ix * ix, g) + reg, _blur(ix * iy, g), _blur(iy * iy, g) + reg
            bx, by = _blur(ix * it, g), _blur(iy * it, g)
            det = sxx * syy - sxy * sxy
            step = torch.cat([-(syy * bx - sxy * by) / det, -(sxx * by - sxy * bx) / det], dim=1)
            flow = flow + step.clamp(-max_step, max_step)
            flow = _blur(flow.reshape(2 * n, 1, h, w), g).reshape(n, 2, h, w)
    return flow


def _clip_rows(fake: torch.Tensor, real: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, border: int,
               floor: bool) -> torch.Tensor:
    """Per-clip sums for one batch -> (B, K) float64 rows (aggregated after gathering over ranks).
    fake, real: (B, T, 3, H, W) uint8 (or float [0,1])."""
    fake, real = as_unit(fake), as_unit(real)
    b, t = fake.shape[:2]
    h, w = fake.shape[-2:]
    static = (mask.reshape(b, 1, h, w) > 0).to(torch.float64)
    moving = 1 - static
    if border:
        inner = torch.zeros(1, 1, h, w, dtype=torch.float64, device=fake.device)
        inner[..., border:h - border, border:w - border] = 1
        moving = moving * inner
    true = flow.to(torch.float64)  # (B, T-1, 2, H, W)

    def flow_stats(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        est = estimate_flow(video[:, :-1].reshape(-1, 3, h, w), video[:, 1:].reshape(-1, 3, h, w))
        est = est.reshape(b, t - 1, 2, h, w).double()
        epe = ((est - true).pow(2).sum(dim=2).sqrt() * moving).sum(dim=(1, 2, 3))
        speed = (est.pow(2).sum(dim=2).sqrt() * moving).sum(dim=(1, 2, 3))
        return epe, speed

    epe, speed = flow_stats(fake)
    true_speed = (true.pow(2).sum(dim=2).sqrt() * moving).sum(dim=(1, 2, 3))
    n_moving = moving.sum(dim=(1, 2, 3)).expand(b) * (t - 1)
    f = fake
    step = ((f[:, 1:] - f[:, :-1]).abs().mean(dim=2) * static).sum(dim=(1, 2, 3)) * 255
    drift = ((f[:, 1:] - f[:, :1]).abs().mean(dim=2) * static).sum(dim=(1, 2, 3)) * 255
    n_static = static.sum(dim=(1, 2, 3)).expand(b) * (t - 1)
    psnr_t = psnr_frames(fake[:, 1:], real[:, 1:])  # (B, T-1)
    epe_real = flow_stats(real)[0] if floor else torch.zeros_like(epe)
    cols = [epe, speed, true_speed, n_moving, step, drift, n_static, epe_real]
    return torch.cat([torch.stack(cols, dim=1), psnr_t.double()], dim=1).cpu()


def benchmark(generator: object, loader: Iterable[dict], *, n: int | None = None, device: str | torch.device = "cpu",
              seed: int = 0, border: int = 4, estimator_floor: bool = True) -> dict:
    """Run the motion benchmark over `n` clips (default: all) of a loader yielding `video` uint8 (B,T,3,H,W),
    `flow` (B,T-1,2,H,W) and `mask` (B,H,W) or (B,1,H,W). `generator`: a vsyn generator module or a callable
    `(images (B,3,H,W) [0,1], num_frames) -> (B,T,3,H,W) [0,1]`. With torch.distributed initialised, each rank takes
    its share of `n` from its own loader shard and the rows are all-gathered. Lower is better for EPE, leakage and
    drift; higher for PSNR; speed ratio should be ~1."""
    fn = video_fn(generator, seed=seed, device=device)
    want = local_share(n) if n is not None else None
    rows = []
    seen = 0
    for batch in loader:
        if "flow" not in batch or "mask" not in batch:
            raise ValueError("the motion benchmark needs procedural clips with 'flow' and 'mask'")
        real = torch.as_tensor(batch["video"])
        if want is not None:
            real = real[: want - seen]
        b, t = real.shape[:2]
        if b == 0:
            break
        real = real.to(device)
        flow = torch.as_tensor(batch["flow"])[:b].to(device)
        mask = torch.as_tensor(batch["mask"])[:b].to(device)
        fake = fn(real[:, 0].float() / 255, t)
        fake = to_uint8_values(fake).to(torch.uint8)  # judge what users get: 8-bit frames
        rows.append(_clip_rows(fake, real, flow, mask, border, estimator_floor))
        seen += b
        if want is not None and seen >= want:
            break
    local = torch.cat(rows) if rows else torch.zeros(0, 9)
    allrows = all_gather_rows(local.to(device)).cpu().double()
    if allrows.shape[0] == 0:
        raise ValueError("the motion benchmark got no clips")
    s = allrows.sum(dim=0)
    epe, speed, true_speed, n_mov, step, drift, n_static, epe_real = (float(v) for v in s[:8])
    psnr_t = allrows[:, 8:].mean(dim=0)
    return {
        "clips": int(allrows.shape[0]),
        "epe_moving_px": epe / max(n_mov, 1),
        "speed_ratio": speed / max(true_speed, 1e-12),
        "leak_static_l1": step / max(n_static, 1),
        "drift_static_l1": drift / max(n_static, 1),
        "psnr_db": float(psnr_t.mean()),
        "psnr_t_db": [round(float(v), 4) for v in psnr_t],
        "estimator_epe_real_px": epe_real / max(n_mov, 1) if estimator_floor else float("nan"),
        "estimator": ESTIMATOR,
    }


def format_table(rows: dict[str, dict]) -> str:
    """Markdown table, one row per named result of `benchmark`."""
    head = ("| model | clips | EPE moving (px/frame) | speed ratio | static leak (8-bit/step) | static drift (8-bit) "
            "| PSNR (dB) | estimator floor EPE (px) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['clips']} | {r['epe_moving_px']:.3f} | {r['speed_ratio']:.3f} | "
                     f"{r['leak_static_l1']:.3f} | {r['drift_static_l1']:.3f} | {r['psnr_db']:.2f} | "
                     f"{r['estimator_epe_real_px']:.3f} |")
    return "\n".join(lines)
