"""SSIM (Wang et al. 2004) of generated frames against the true future frames, per frame (higher is better).

The standard settings: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range L = 1 (values in
[0,1]), 'valid' filtering (no padding, as the reference MATLAB code), computed per RGB channel and averaged over
channels and positions. Float64 throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsyn.metrics.psnr import as_unit

K1, K2, WINDOW, SIGMA = 0.01, 0.03, 11, 1.5


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of (N, 1, H, W)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ssim_frames(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) pairs -> (...) mean SSIM per frame. H and W must be >= 11."""
    if fake.shape != real.shape:
        raise ValueError(f"ssim: shapes differ {tuple(fake.shape)} vs {tuple(real.shape)}")
    lead, (c, h, w) = fake.shape[:-3], fake.shape[-3:]
    if min(h, w) < WINDOW:
        raise ValueError(f"ssim needs frames of at least {WINDOW}x{WINDOW}, got {h}x{w}")
    x = as_unit(fake).reshape(-1, 1, h, w)
    y = as_unit(real).reshape(-1, 1, h, w)
    g = gaussian_window().to(x.device)
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x**2
    syy = _filter(y * y, g) - mu_y**2
    sxy = _filter(x * y, g) - mu_x * mu_y
    c1, c2 = K1**2, K2**2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return smap.reshape(*lead, c, -1).mean(dim=(-2, -1))
