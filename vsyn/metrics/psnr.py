"""PSNR of generated frames against the true future frames, per frame, in dB (higher is better).

Computed in float64 on values in [0, 1] (peak 1). Identical frames would give +inf, which poisons a mean, so the
MSE is floored at 1e-10: PSNR is capped at 100 dB.
"""

from __future__ import annotations

import torch

MSE_FLOOR = 1e-10


def as_unit(video: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float [0,1] -> float64 [0,1]."""
    if video.dtype == torch.uint8:
        return video.double() / 255
    return video.double()


def psnr_frames(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) pairs -> (...) PSNR in dB, one value per frame."""
    if fake.shape != real.shape:
        raise ValueError(f"psnr: shapes differ {tuple(fake.shape)} vs {tuple(real.shape)}")
    mse = (as_unit(fake) - as_unit(real)).pow(2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))
