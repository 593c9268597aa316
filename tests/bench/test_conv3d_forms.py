"""bench/conv3d.py's space-to-depth form is the strided convolution it stands in for (float64, CPU)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def space_to_depth():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("conv3d").strided_conv_as_space_to_depth
    finally:
        sys.path.remove(str(BENCH))


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
