"""The penalty convolutions (vsyn.nn.input_grad) against plain autograd, in float64: same ∇x, same double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsyn import losses
from vsyn.config import ModelConfig
from vsyn.nn import build_critics
from vsyn.nn.input_grad import conv_input_grad, input_grad_convolutions


@pytest.mark.parametrize("dims,stride,padding,dilation,groups", [
    (2, 1, 1, 1, 1), (2, 2, 1, 1, 1), (2, 2, 0, 1, 2), (3, 1, 1, 1, 1), (3, (1, 2, 2), (0, 1, 1), 1, 1), (2, 1, 2, 2, 1),
])
def test_conv_input_grad_equals_autograd(dims, stride, padding, dilation, groups):
    torch.manual_seed(0)
    shape = (2, 4, 7, 9) if dims == 2 else (2, 4, 5, 7, 9)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, *([3] * dims), dtype=torch.float64)
    conv = F.conv2d if dims == 2 else F.conv3d
    y = conv(x, w, None, stride, padding, dilation, groups)
    g = torch.randn_like(y)
    (ref,) = torch.autograd.grad(y, x, g)
    got = conv_input_grad(tuple(x.shape), w, g, stride, padding, dilation, groups)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def _graph_names(t: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def _penalty_and_param_grads(critics, frames, cond, video, *, fast: bool):
    critics.zero_grad(set_to_none=True)
    frames = frames.clone().requires_grad_(True)
    video = video.clone().requires_grad_(True)
    ctx = input_grad_convolutions() if fast else torch.enable_grad()
    with ctx:
        s, t = critics.spatial(frames, cond), critics.temporal(video)
        gp = losses.gradient_penalty(s, frames, batch_dims=2) + losses.gradient_penalty(t, video, batch_dims=1)
    assert ("_InputPathBackward" in _graph_names(t)) == fast  # the split convolutions are really in the graph
    gp.backward()
    return gp.detach(), {n: p.grad.clone() for n, p in critics.named_parameters() if p.grad is not None}


def test_penalty_double_backward_matches_plain_autograd_float64():
    """GP of both critics (SN convs 2D and 3D, attention with γ ≠ 0) and its gradient w.r.t. every critic weight."""
    torch.manual_seed(1)
    critics = build_critics(ModelConfig(resolution=32, frames=9, ch_ds=4, ch_dt=4)).double().eval()
    with torch.no_grad():
        for p in critics.parameters():
            if p.shape == (1,):
                p.fill_(0.7)  # attention gains: put attention into the penalty's graph
    frames = torch.rand(2, 3, 3, 32, 32, dtype=torch.float64)
    cond = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    video = torch.rand(2, 9, 3, 32, 32, dtype=torch.float64)
    ref_gp, ref = _penalty_and_param_grads(critics, frames, cond, video, fast=False)
    gp, got = _penalty_and_param_grads(critics, frames, cond, video, fast=True)
    torch.testing.assert_close(gp, ref_gp, rtol=1e-10, atol=0)
    assert set(got) <= set(ref) and len(got) > 20
    for name, g in ref.items():
        if g.abs().max() == 0:
            continue  # biases feeding only ReLU masks: zero in both
        torch.testing.assert_close(got[name], g, rtol=1e-9, atol=1e-12, msg=name)
