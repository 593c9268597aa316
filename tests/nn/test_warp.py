"""Warping and integration (vsyn.nn.warp) against an independent float64 bilinear sampler and closed forms."""

import numpy as np
import pytest
import torch

from vsyn.nn.warp import integrate, loop_weights, pixel_grid, sample_at, warp


def reference_warp(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Second implementation, float64 numpy: out[c, y, x] = bilinear(image[c], x + ox, y + oy), border clamped."""
    c, h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(xs + offset[0], 0, w - 1)
    sy = np.clip(ys + offset[1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = sx - x0, sy - y0
    top = image[:, y0, x0] * (1 - fx) + image[:, y0, x1] * fx
    bottom = image[:, y1, x0] * (1 - fx) + image[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_random_field_matches_the_float64_reference():
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 24, 40))
    offset = rng.normal(0, 4, (2, 2, 24, 40))  # reaches past the borders: clamping is exercised too
    out = warp(torch.tensor(image), torch.tensor(offset)).double().numpy()
    for i in range(2):
        ref = reference_warp(image[i], offset[i])
        assert np.abs(out[i] - ref).max() < 1e-5  # the sampler computes in float32


def test_integer_shift_moves_pixels_exactly():
    """Exact up to float32 coordinate rounding (grid_sample's normalised coordinates): < 1e-5 in value, and the
    same 8-bit pixels once rounded."""
    rng = np.random.default_rng(1)
    pixels = torch.tensor(rng.integers(0, 256, (1, 3, 16, 20)), dtype=torch.float32)
    offset = torch.zeros(1, 2, 16, 20)
    offset[:, 0], offset[:, 1] = 3, -2  # out(x, y) = in(x + 3, y - 2)
    out = warp(pixels / 255, offset)
    assert (out[..., 2:, :17] - pixels[..., :14, 3:] / 255).abs().max() < 1e-5
    assert torch.equal((out * 255).round()[..., 2:, :17], pixels[..., :14, 3:])


def test_zero_offset_is_the_identity_bit_for_bit():
    image = torch.rand(2, 3, 33, 17)
    assert torch.equal(warp(image, torch.zeros(2, 2, 33, 17)), image)


def test_bf16_and_channels_last_inputs():
    image = torch.rand(2, 3, 32, 32)
    offset = torch.randn(2, 2, 32, 32) * 3
    ref = warp(image, offset)
    assert torch.equal(warp(image.contiguous(memory_format=torch.channels_last), offset), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = warp(image.bfloat16(), offset.bfloat16())
    assert low.dtype == torch.bfloat16
    # bf16 rounds the image (~3 significant digits) and the offsets; coordinates are then sampled in float32
    assert (low.float() - warp(image.bfloat16().float(), offset.bfloat16().float())).abs().max() < 1e-2


def test_gradients_reach_image_and_offset():
    image = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 2, 12, 12, dtype=torch.float64) * 2).requires_grad_(True)
    warp(image, offset).square().sum().backward()
    assert image.grad.abs().sum() > 0 and offset.grad.abs().sum() > 0


@pytest.mark.parametrize("backward", [True, False])
def test_integrating_a_constant_field_is_a_straight_line(backward):
    v = torch.zeros(1, 2, 20, 24)
    v[:, 0], v[:, 1] = 0.75, -0.5
    off = integrate(v, 5, backward=backward)
    sign = -1 if backward else 1
    for k in range(1, 6):
        expected = sign * k * v
        # inside, away from the clamped border, the path is exactly p -+ k·v
        assert torch.allclose(off[k - 1][..., 6:-6, 6:-6], expected[..., 6:-6, 6:-6], atol=1e-5)


def test_integrating_a_rotation_follows_the_circle():
    """v(p) = ω × (p − c): Euler steps spiral outwards by a known factor; the angle is exact per step."""
    h = w = 41
    grid = pixel_grid(h, w, dtype=torch.float64)
    c = 20.0
    omega = 0.05
    rel = grid - c
    v = torch.stack([-omega * rel[:, 1], omega * rel[:, 0]], dim=1).float()
    off = integrate(v, 3, backward=False)[-1].double()
    q = grid + off
    # Euler on a linear field: q_{k+1} = (I + ωJ) q_k exactly (bilinear sampling of a linear field is exact)
    step = torch.tensor([[1.0, -omega], [omega, 1.0]], dtype=torch.float64)
    expected = torch.einsum("ij,njhw->nihw", torch.linalg.matrix_power(step, 3), rel) + c
    inner = (slice(None), slice(None), slice(10, 31), slice(10, 31))
    assert (q[inner] - expected[inner]).abs().max() < 1e-3


def test_loop_weights_cross_fade_in_the_middle():
    w = loop_weights(8)  # crossfade over the middle half: phases 0.25..0.75
    assert w[0] == 1 and w[1] == 1 and w[2] == 1 and w[6] == 0 and w[7] == 0
    assert 0 < w[3] < 1 and w[4] == 0.5 and torch.all(w[1:] <= w[:-1])
    full = loop_weights(4, crossfade=1.0)
    a = torch.arange(4) / 4
    assert torch.allclose(full, 1 - a * a * (3 - 2 * a))  # smoothstep over the whole loop


def test_sample_at_positions_shape():
    image = torch.rand(2, 3, 10, 10)
    pos = pixel_grid(4, 5).expand(2, -1, -1, -1) * 2  # a 4x5 grid sampling every other pixel
    assert (sample_at(image, pos) - image[..., 0:8:2, 0:10:2]).abs().max() < 1e-6
