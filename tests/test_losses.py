"""Losses against hand-computed values and closed forms."""

import math

import pytest
import torch

from vsyn import losses

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, 3.0])


def test_wgan():
    # critic minimises E[D(fake)] − E[D(real)] = 1.75 − 0.5
    assert losses.wgan_critic_loss(REAL, FAKE).item() == pytest.approx(1.25)
    assert losses.wgan_generator_loss(FAKE).item() == pytest.approx(-1.75)


def test_hinge():
    # relu(1−2)=0, relu(1+1)=2 -> 1;  relu(1.5)=1.5, relu(4)=4 -> 2.75
    assert losses.hinge_critic_loss(REAL, FAKE).item() == pytest.approx(3.75)
    assert losses.hinge_generator_loss(FAKE).item() == pytest.approx(-1.75)


def test_logistic():
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(3.0)) / 2
    assert losses.logistic_critic_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)
    assert losses.logistic_generator_loss(FAKE).item() == pytest.approx((sp(-0.5) + sp(-3.0)) / 2, rel=1e-6)


def test_losses_are_float32_for_bf16_scores():
    assert losses.wgan_critic_loss(REAL.bfloat16(), FAKE.bfloat16()).dtype == torch.float32


def _linear_critic(w: torch.Tensor):
    return lambda x: (x.flatten(1) * w).sum(dim=1)  # D(x) = w·x, so ∇D = w for every x


def test_gradient_penalty_linear_critic_closed_form():
    w = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ‖w‖ = 5 at every x̂
    x = losses.interpolate(torch.randn(6, 2, 2), torch.randn(6, 2, 2))
    gp = losses.gradient_penalty(_linear_critic(w)(x), x)
    assert gp.item() == pytest.approx((5 - 1) ** 2, rel=1e-6)


def test_gradient_penalty_is_differentiable_wrt_critic():
    w = torch.tensor([0.6, 0.0, 0.0], requires_grad=True)  # ‖w‖ = 0.6: d/dw (‖w‖−1)² = 2(‖w‖−1)·w/‖w‖
    x = losses.interpolate(torch.randn(4, 3), torch.randn(4, 3))
    losses.gradient_penalty((x * w).sum(dim=1), x).backward()
    assert torch.allclose(w.grad, torch.tensor([2 * (0.6 - 1), 0.0, 0.0]), atol=1e-6)


def test_gradient_penalty_is_per_sample():
    """A critic whose gradient differs per sample: D(x) = Σ_i c_i·x_i² with x of shape (B, 1).

    ‖∇D(x_b)‖ = 2·c·|x_b|; a per-sample penalty averages (2c|x_b| − 1)², the original's batch-norm would take one
    norm over the whole batch slice.
    """
    x = torch.tensor([[0.25], [1.0], [2.0]], requires_grad=True)
    gp = losses.gradient_penalty((x.square()).sum(dim=1), x)
    expected = sum((2 * abs(v) - 1) ** 2 for v in (0.25, 1.0, 2.0)) / 3
    assert gp.item() == pytest.approx(expected)


def test_interpolation_alpha_is_per_sample():
    real, fake = torch.ones(64, 2, 3), torch.zeros(64, 2, 3)
    x = losses.interpolate(real, fake, generator=torch.Generator().manual_seed(0))
    alpha = x[:, 0, 0]
    assert torch.equal(x, alpha[:, None, None].expand_as(x))  # constant within a sample
    assert alpha.unique().numel() == 64  # different between samples
    assert 0 <= alpha.min() and alpha.max() <= 1 and x.requires_grad and x.is_leaf
    x2 = losses.interpolate(torch.ones(4, 3, 5), torch.zeros(4, 3, 5), batch_dims=2)  # spatial critic: (B, K, ...)
    assert x2[:, :, 0].unique().numel() == 12


def test_interpolate_is_reproducible_by_seed():
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    a = losses.interpolate(real, fake, generator=torch.Generator().manual_seed(7))
    b = losses.interpolate(real, fake, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_r1_quadratic_critic_closed_form():
    """D(x) = ½ xᵀAx, ∇D = Ax, so R1 = mean_b ‖A x_b‖²."""
    a = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]], requires_grad=True)
    scores = 0.5 * ((x @ a) * x).sum(dim=1)
    expected = ((x.detach() @ a).square().sum(dim=1)).mean()
    assert losses.r1_penalty(scores, x).item() == pytest.approx(expected.item())  # (5 + 40 + 5) / 3


def test_penalties_under_bf16_autocast_reduce_in_float32():
    w = torch.full((1, 256), 0.5)  # ‖w‖ = 0.5·16 = 8
    x = torch.randn(4, 256, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = torch.nn.functional.linear(x, w).squeeze(1)
        assert scores.dtype == torch.bfloat16
        sq = losses.input_grad_sq_norm(scores, x)
        r1 = losses.r1_penalty(scores, x)
    assert sq.dtype == torch.float32 and r1.dtype == torch.float32
    assert r1.item() == pytest.approx(64.0, rel=1e-2)
