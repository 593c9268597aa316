"""PSNR and SSIM against closed forms and an independent float64 reference (2-D window, explicit loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsyn.metrics.psnr import psnr_frames
from vsyn.metrics.ssim import ssim_frames


def test_psnr_of_known_mse():
    real = torch.full((2, 3, 3, 16, 16), 0.5, dtype=torch.float64)
    fake = real + 0.1  # MSE = 0.01 -> 20 dB
    np.testing.assert_allclose(psnr_frames(fake, real).numpy(), 20.0, rtol=1e-12)
    u8 = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    assert psnr_frames(u8 + 5, u8).item() == pytest.approx(10 * np.log10(255**2 / 25), rel=1e-12)


def test_psnr_identical_is_capped():
    x = torch.rand(2, 3, 8, 8)
    assert psnr_frames(x, x).tolist() == [100.0, 100.0]


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004, written independently: explicit 11x11 Gaussian (sigma 1.5), every valid window, per
    channel, float64."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(x.shape[0]):
        h, w = x.shape[1:]
        for i in range(h - 10):
            for j in range(w - 10):
                a, b = x[c, i:i + 11, j:j + 11], y[c, i:i + 11, j:j + 11]
                ma, mb = (g * a).sum(), (g * b).sum()
                va = (g * (a - ma) ** 2).sum()
                vb = (g * (b - mb) ** 2).sum()
                cov = (g * (a - ma) * (b - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_independent_reference():
    rng = np.random.default_rng(0)
    x = rng.random((3, 20, 23))
    y = np.clip(x + 0.15 * rng.standard_normal(x.shape), 0, 1)
    got = ssim_frames(torch.from_numpy(y)[None], torch.from_numpy(x)[None]).item()
    assert got == pytest.approx(ssim_reference(y, x), abs=1e-12)


def test_ssim_identity_and_constant_images():
    x = torch.rand(2, 4, 3, 16, 16, dtype=torch.float64)
    np.testing.assert_allclose(ssim_frames(x, x).numpy(), 1.0, atol=1e-12)
    a, b = 0.3, 0.7  # constant images: only the luminance term remains
    fa, fb = torch.full((1, 3, 12, 12), a, dtype=torch.float64), torch.full((1, 3, 12, 12), b, dtype=torch.float64)
    expected = (2 * a * b + 0.01**2) / (a * a + b * b + 0.01**2)
    assert ssim_frames(fa, fb).item() == pytest.approx(expected, abs=1e-12)


def test_ssim_shape_per_frame_and_uint8():
    x = torch.randint(0, 256, (2, 5, 3, 16, 16), dtype=torch.uint8)
    out = ssim_frames(x, x)
    assert out.shape == (2, 5)
    with pytest.raises(ValueError):
        ssim_frames(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
