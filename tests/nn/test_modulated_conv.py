"""The efficient modulated conv (shared conv over all frames, output demodulation) equals the grouped-conv reference."""

import pytest
import torch

import torch.nn.functional as F

from vsyn.nn import layers
from vsyn.nn.layers import (
    ModulatedConv2d,
    StyledConv,
    ToRGB,
    blur_kernel,
    blur_upsampled,
    modulated_conv2d,
    upsample_conv,
)


def _run(conv: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor, grouped: bool, probe: torch.Tensor):
    conv.grouped = grouped
    conv.zero_grad()
    x = x.clone().requires_grad_(True)
    s = style.clone().requires_grad_(True)
    out = conv(x, s)
    (out * probe).sum().backward()
    grads = [x.grad, s.grad, conv.weight.grad, conv.affine.weight.grad, conv.affine.bias.grad]
    return out.detach(), [g.clone() for g in grads]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(params=["folded", "two-step"])
def upsampling(request, monkeypatch):
    """Both forms of the efficient path's 2x upsampling on this CPU (the GPU folds, a CPU by default does not)."""
    monkeypatch.setattr(layers, "FOLD_BLUR_DEVICES", {"cpu"} if request.param == "folded" else set())
    return request.param


@pytest.mark.parametrize("up", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_efficient_matches_reference_forward_and_backward(up: bool, demodulate: bool, upsampling: str):
    torch.manual_seed(0)
    b, t, i, o, side, style_dim = 3, 4, 5, 6, 7, 16
    conv = ModulatedConv2d(i, o, 3, style_dim, demodulate=demodulate, up=up).double()
    with torch.no_grad():  # random affine bias, so the modulation differs per channel and per video
        conv.affine.bias.uniform_(0.2, 2.0)
    x = torch.randn(b * t, i, side, side, dtype=torch.float64)
    style = torch.rand(b, style_dim, dtype=torch.float64)
    out_side = 2 * side if up else side
    probe = torch.randn(b * t, o, out_side, out_side, dtype=torch.float64)

    ref, ref_grads = _run(conv, x, style, grouped=True, probe=probe)
    eff, eff_grads = _run(conv, x, style, grouped=False, probe=probe)

    assert ref.shape == (b * t, o, out_side, out_side)
    assert _rel(eff, ref) < 1e-6
    for name, g_eff, g_ref in zip(["input", "style", "weight", "affine.weight", "affine.bias"], eff_grads, ref_grads):
        assert _rel(g_eff, g_ref) < 1e-6, name


def test_demodulation_normalises_output_scale():
    """With demodulation, the output's scale does not depend on the style's scale (the point of demodulating)."""
    torch.manual_seed(1)
    conv = ModulatedConv2d(4, 4, 3, 8).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    s = torch.rand(2, 8, dtype=torch.float64)
    with torch.no_grad():
        y1 = conv(x, s)
        conv.affine.bias.mul_(10)
        conv.affine.weight.mul_(10)
        y2 = conv(x, s)
    assert torch.allclose(y1, y2, rtol=1e-6, atol=1e-8)


def test_torgb_is_not_demodulated():
    conv = ToRGB(4, 8)
    assert conv.conv.demodulate is False
    assert conv(torch.randn(6, 4, 5, 5), torch.rand(2, 8)).shape == (6, 3, 5, 5)


def test_upsampling_is_exactly_2x_and_preserves_constants():
    """Zero-stuffing (a centre-tap kernel) then the ×4-gain [1,3,3,1] blur must reproduce a constant image."""
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1] = 1.0
    x = torch.full((2, 1, 5, 5), 0.7, dtype=torch.float64)
    y = modulated_conv2d(x, weight, torch.ones(1, 1, dtype=torch.float64), demodulate=False, up_kernel=blur_kernel())
    assert y.shape == (2, 1, 10, 10)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7), rtol=0, atol=1e-12)


@pytest.mark.parametrize("side", [1, 4, 7])
def test_folded_upsampling_equals_transposed_conv_then_blur(side: int):
    """The one 6×6 transposed conv equals the two steps it replaces, on an asymmetric random weight (float64)."""
    torch.manual_seed(side)
    x = torch.randn(2, 5, side, side + 2, dtype=torch.float64)
    weight = torch.randn(3, 5, 3, 3, dtype=torch.float64)  # (O, I, k, k), the convention of modulated_conv2d
    two_steps = blur_upsampled(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), blur_kernel().double())
    folded = upsample_conv(x, weight, blur_kernel().double(), fold=True)
    assert torch.equal(upsample_conv(x, weight, blur_kernel().double(), fold=False), two_steps)
    assert folded.shape == two_steps.shape == (2, 3, 2 * side, 2 * side + 4)
    assert _rel(folded, two_steps) < 1e-12


@pytest.mark.parametrize("up", [False, True])
def test_styled_conv_fused_epilogue_matches_op_by_op(up: bool, upsampling: str):
    """StyledConv folds bias, leaky ReLU and √2 into the demodulation pass; the grouped reference runs each op."""
    torch.manual_seed(2)
    b, t, i, o, side, style_dim = 2, 3, 4, 5, 6, 8
    layer = StyledConv(i, o, style_dim, up=up).double()
    with torch.no_grad():
        layer.act.bias.uniform_(-1.0, 1.0)  # nonzero, so a dropped or doubled bias would show
        layer.conv.affine.bias.uniform_(0.2, 2.0)
    x = torch.randn(b * t, i, side, side, dtype=torch.float64)
    style = torch.rand(b, style_dim, dtype=torch.float64)
    out_side = 2 * side if up else side
    probe = torch.randn(b * t, o, out_side, out_side, dtype=torch.float64)

    def run(grouped: bool):
        layer.conv.grouped = grouped
        layer.zero_grad()
        out = layer(x, style)
        (out * probe).sum().backward()
        return out.detach(), [p.grad.clone() for p in (layer.conv.weight, layer.conv.affine.weight, layer.act.bias)]

    ref, ref_grads = run(grouped=True)
    # the op-by-op reference really is FusedLeakyReLU after the reference conv
    layer.conv.grouped = True
    with torch.no_grad():
        assert torch.equal(ref, layer.act(layer.conv(x, style)))
    eff, eff_grads = run(grouped=False)
    assert (ref < 0).any() and (ref > 0).any()  # both sides of the leaky ReLU are exercised
    assert _rel(eff, ref) < 1e-6
    for name, g_eff, g_ref in zip(["weight", "affine.weight", "bias"], eff_grads, ref_grads):
        assert _rel(g_eff, g_ref) < 1e-6, name
