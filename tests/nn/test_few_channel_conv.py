"""few_channel_conv's im2col form is the convolution it replaces: values and gradients of every order (float64)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vsyn.nn.layers import few_channel_conv


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels,kernel,padding", [(3, 3, 1), (1, 3, 0), (4, 1, 0), (2, 5, 2)])
def test_im2col_equals_conv(dims, channels, kernel, padding):
    torch.manual_seed(dims * 10 + channels + kernel)
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(channels, 5, kernel, padding=padding).double()
    size = (6, 7, 5) if dims == 3 else (7, 6)
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    reference = conv(x)
    out = few_channel_conv(x, conv, im2col=True)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    assert few_channel_conv(x, conv, im2col=False).equal(reference)


@pytest.mark.parametrize("dims", [2, 3])
def test_im2col_gradients_of_every_order(dims):
    """gradcheck and gradgradcheck against finite differences, and the penalty's double backward against conv's."""
    torch.manual_seed(dims)
    conv = (nn.Conv3d if dims == 3 else nn.Conv2d)(3, 4, 3, padding=1).double()
    size = (3, 4, 5) if dims == 3 else (4, 5)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)

    def im2col(x, weight, bias):  # the layer's hyper-parameters around free weight and bias tensors
        layer = SimpleNamespace(weight=weight, bias=bias, stride=conv.stride, padding=conv.padding,
                                dilation=conv.dilation, groups=conv.groups)
        return few_channel_conv(x, layer, im2col=True)

    w = conv.weight.detach().clone().requires_grad_(True)
    b = conv.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(im2col, (x, w, b))
    assert torch.autograd.gradgradcheck(im2col, (x, w, b))

    # a gradient penalty's weight gradient, both ways
    def penalty_grad(use: bool) -> tuple[torch.Tensor, ...]:
        layer = (nn.Conv3d if dims == 3 else nn.Conv2d)(3, 4, 3, padding=1).double()
        layer.load_state_dict({"weight": w.detach(), "bias": b.detach()})
        xi = x.detach().requires_grad_(True)
        score = torch.tanh(few_channel_conv(xi, layer, im2col=use)).sum()
        (grad_x,) = torch.autograd.grad(score, xi, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), (layer.weight, layer.bias))

    for got, want in zip(penalty_grad(True), penalty_grad(False)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_spectral_norm_weight_read_once():
    """Training-mode spectral norm runs one power iteration per weight read: the im2col path reads it once, like
    conv(x), so both leave the same u vector behind."""
    torch.manual_seed(0)
    a = spectral_norm(nn.Conv3d(3, 4, 3, padding=1)).double()
    b = spectral_norm(nn.Conv3d(3, 4, 3, padding=1)).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(few_channel_conv(x, a, im2col=True), b(x), rtol=0, atol=1e-12)
    assert a.parametrizations.weight[0]._u.equal(b.parametrizations.weight[0]._u)


def test_autocast_dtype():
    """Under autocast the copy and the matmul run in the autocast dtype (the cast happens before the big copy)."""
    conv = nn.Conv3d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = few_channel_conv(x, conv, im2col=True)
        reference = conv(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.float(), rtol=0.02, atol=0.02)


def test_temporal_critic_same_with_im2col(monkeypatch):
    """The temporal critic routes its RGB input conv through few_channel_conv: scores and a gradient penalty's
    weight gradients are the same whether that conv runs as im2col (as on a GPU) or as a convolution (float64)."""
    from vsyn.nn import layers
    from vsyn.nn.critics import TemporalCritic

    torch.manual_seed(0)
    critic = TemporalCritic(32, ch=4, frames=5).double().eval()
    video = torch.rand(2, 5, 3, 32, 32, dtype=torch.float64)

    def scores_and_penalty_grads(devices: set[str]) -> list[torch.Tensor]:
        monkeypatch.setattr(layers, "IM2COL_DEVICES", devices)
        critic.zero_grad()
        v = video.clone().requires_grad_(True)
        scores = critic(v)
        (grad_v,) = torch.autograd.grad(scores.sum(), v, create_graph=True)
        grad_v.square().sum().backward()
        return [scores.detach(), *(p.grad.clone() for p in critic.parameters() if p.grad is not None)]

    plain, im2col = scores_and_penalty_grads(set()), scores_and_penalty_grads({"cpu"})
    assert len(plain) == len(im2col) > 2
    for got, want in zip(im2col, plain):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
