"""Adversarial losses and gradient penalties as small pure functions of critic scores.

Sign convention: every function returns a quantity to *minimise*. The WGAN critic maximises D(real) − D(fake), so its
loss is D(fake) − D(real). (The original code flipped this: its critic scored real samples *low* and G minimised
+D(fake); the two are equivalent up to the sign of D.) Loss weights (λ_GP = 1, λ_S = 1, λ_T = 5, γ/2 and the lazy
R1 interval) are applied by the caller.

Penalties under bf16 autocast: the interpolated/real inputs stay float32 leaf tensors and autograd returns their
gradient in float32; the squared norm is then reduced in float32 with autocast disabled, so a bf16 critic forward
never turns the penalty's reduction into a bf16 sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ---- WGAN (the original) ----------------------------------------------------------------------------------------


def wgan_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[D(fake)] − E[D(real)]: minimising it maximises the critic's estimate of the Wasserstein distance."""
    return fake_scores.float().mean() - real_scores.float().mean()


def wgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """−E[D(fake)]."""
    return -fake_scores.float().mean()


# ---- hinge ------------------------------------------------------------------------------------------------------


def hinge_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[relu(1 − D(real))] + E[relu(1 + D(fake))]."""
    return F.relu(1 - real_scores.float()).mean() + F.relu(1 + fake_scores.float()).mean()


def hinge_generator_loss(fake_scores: Tensor) -> Tensor:
    """−E[D(fake)]."""
    return -fake_scores.float().mean()


# ---- non-saturating logistic ------------------------------------------------------------------------------------


def logistic_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """E[softplus(−D(real))] + E[softplus(D(fake))]: binary cross-entropy on logits."""
    return F.softplus(-real_scores.float()).mean() + F.softplus(fake_scores.float()).mean()


def logistic_generator_loss(fake_scores: Tensor) -> Tensor:
    """E[softplus(−D(fake))], the non-saturating generator loss."""
    return F.softplus(-fake_scores.float()).mean()


# ---- penalties --------------------------------------------------------------------------------------------------


def interpolate(
    real: Tensor, fake: Tensor, *, batch_dims: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """x̂ = α·real + (1−α)·fake with one α ~ U(0,1) per sample, a sample being an index over the first `batch_dims`
    dimensions (e.g. 2 for the spatial critic's (B, K) frames). Returns a float32 leaf that requires grad.

    The original drew one α per frame index shared across the batch; here every sample gets its own.
    """
    assert real.shape == fake.shape, (real.shape, fake.shape)
    shape = real.shape[:batch_dims] + (1,) * (real.ndim - batch_dims)
    alpha_device = real.device if generator is None else generator.device
    alpha = torch.rand(shape, generator=generator, device=alpha_device).to(real.device)
    x = alpha * real.float() + (1 - alpha) * fake.float()
    return x.detach().requires_grad_(True)


def input_grad_sq_norm(scores: Tensor, inputs: Tensor, *, batch_dims: int = 1) -> Tensor:
    """‖∇_x Σ scores‖² per sample (float32, shape inputs.shape[:batch_dims]), differentiable (create_graph)."""
    (grad,) = torch.autograd.grad(scores.float().sum(), inputs, create_graph=True)
    with torch.autocast(device_type=grad.device.type, enabled=False):
        return grad.float().square().sum(dim=tuple(range(batch_dims, grad.ndim)))


def gradient_penalty(scores: Tensor, inputs: Tensor, *, batch_dims: int = 1) -> Tensor:
    """WGAN-GP: E[(‖∇_x̂ D(x̂)‖ − 1)²] over samples, `inputs` = x̂ from `interpolate`, `scores` = D(x̂)."""
    sq = input_grad_sq_norm(scores, inputs, batch_dims=batch_dims)
    return (sq.add(1e-12).sqrt() - 1).square().mean()


def r1_penalty(scores: Tensor, inputs: Tensor, *, batch_dims: int = 1) -> Tensor:
    """R1: E[‖∇_x D(x)‖²] on real inputs (which must require grad). The caller scales by γ/2 and the lazy interval."""
    return input_grad_sq_norm(scores, inputs, batch_dims=batch_dims).mean()
