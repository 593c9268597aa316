"""bench/conv3d.py's other forms (space-to-depth, im2col, time-to-channels) are the convolutions they stand in for
(float64, CPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("conv3d")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def space_to_depth(bench):
    return bench.strided_conv_as_space_to_depth


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kernel,padding", [(4, 1), (2, 0), (4, 0), (6, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_depth_equals_strided_conv(space_to_depth, dims, kernel, padding, channels_last):
    g = torch.Generator().manual_seed(dims * 100 + kernel * 10 + padding)
    size = (25, 9, 10) if dims == 3 else (9, 10)  # odd and even sides
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=g)
    w = torch.randn(5, 3, *(kernel,) * dims, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d if dims == 3 else torch.channels_last)
    x.requires_grad_(True)
    conv = F.conv3d if dims == 3 else F.conv2d
    reference = conv(x, w, b, stride=2, padding=padding)
    out = space_to_depth(x, w, padding, b)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-10)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (x, w), grad)
    for got, want in zip(torch.autograd.grad(out, (x, w), grad), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels,kernel,padding", [(3, 3, 1), (1, 3, 0), (4, 1, 0), (2, 5, 2)])
def test_im2col_equals_conv(bench, dims, channels, kernel, padding):
    g = torch.Generator().manual_seed(dims * 10 + channels + kernel)
    size = (6, 7, 5) if dims == 3 else (7, 6)
    x = torch.randn(2, channels, *size, dtype=torch.float64, generator=g)
    w = torch.randn(5, channels, *(kernel,) * dims, dtype=torch.float64, generator=g)
    b = torch.randn(5, dtype=torch.float64, generator=g)
    reference = (F.conv3d if dims == 3 else F.conv2d)(x, w, b, padding=padding)
    torch.testing.assert_close(bench.im2col_conv(x, w, padding, b), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding,kernel", [(1, 3), (0, 3), (2, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_time_to_channels_equals_conv3d(bench, padding, kernel, channels_last):
    g = torch.Generator().manual_seed(padding * 10 + kernel)
    x = torch.randn(2, 3, 6, 7, 5, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(4, 3, kernel, kernel, kernel, dtype=torch.float64, generator=g)
    b = torch.randn(4, dtype=torch.float64, generator=g)
    reference = F.conv3d(x, w, b, padding=padding)
    out = bench.time_to_channels_conv(x, w, padding, b)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("form", ["im2col_conv", "time_to_channels_conv"])
def test_stride1_forms_have_gradients_of_every_order(bench, form):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
    conv = lambda x, w, b: getattr(bench, form)(x, w, 1, b)  # noqa: E731
    assert torch.autograd.gradcheck(conv, (x, w, b))
    assert torch.autograd.gradgradcheck(conv, (x, w, b))
