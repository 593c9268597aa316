"""DownBlock's cheaper evaluation order (strided folded conv, pool before the 1×1 shortcut) against the textbook
order, in float64, for 2D and 3D, odd sizes, spectral norm on and off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsyn.nn.layers import DownBlock


def textbook(block: DownBlock, x: torch.Tensor) -> torch.Tensor:
    """method.md's order: ReLU → conv3 → ReLU → conv3 → pool; shortcut conv1 → pool (first: pool → conv1)."""
    pool = block.pool
    h = x if block.first else F.relu(x)
    h = pool(block.conv2(F.relu(block.conv1(h))), 2)
    s = block.shortcut(pool(x, 2)) if block.first else pool(block.shortcut(x), 2)
    return h + s


@pytest.mark.parametrize("dims,shape", [(2, (3, 4, 16, 16)), (2, (2, 4, 15, 17)), (3, (2, 4, 25, 16, 16)),
                                        (3, (1, 4, 9, 11, 13))])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("sn", [False, True])
def test_downblock_equals_textbook_order(dims, shape, first, sn):
    torch.manual_seed(0)
    block = DownBlock(4, 6, sn=sn, first=first, dims=dims).double().eval()  # eval: SN weights fixed across calls
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # biases away from zero
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    got, ref = block(x), textbook(block, x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got_grads = torch.autograd.grad(got, [x, *block.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *block.parameters()], g)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_is_channels_last_tells_the_layout_not_mere_compatibility():
    from vsyn.nn.layers import is_channels_last, to_channels_last

    conv2d, conv3d = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(3, 4, 3)
    assert not is_channels_last(conv2d.weight) and not is_channels_last(conv3d.weight)
    to_channels_last(conv2d), to_channels_last(conv3d)
    assert is_channels_last(conv2d.weight) and is_channels_last(conv3d.weight)
    assert not is_channels_last(torch.zeros(2, 1, 5, 5))  # one channel: both layouts at once, so not "channels-last"
    assert not is_channels_last(torch.zeros(2, 3, 5))  # no channels-last format for 3D tensors
