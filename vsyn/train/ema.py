"""Exponential moving average of the generator, with a half-life in kimg and StyleGAN's ramp-up.

The EMA reads the fp32 master weights of the unwrapped generator, so it is the same under DDP, DeepSpeed
and bf16 autocast.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    def __init__(self, generator: nn.Module, halflife_kimg: float, rampup: float) -> None:
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)
        self.halflife_kimg = halflife_kimg
        self.rampup = rampup

    def beta(self, cur_nimg: int, step_nimg: int) -> float:
        """Decay for one update that covered `step_nimg` clips, at `cur_nimg` clips shown so far."""
        halflife_nimg = self.halflife_kimg * 1000
        if self.rampup > 0:
            halflife_nimg = min(halflife_nimg, cur_nimg * self.rampup)
        if halflife_nimg <= 0:
            return 0.0
        return 0.5 ** (step_nimg / halflife_nimg)

    @torch.no_grad()
    def update(self, generator: nn.Module, cur_nimg: int, step_nimg: int) -> None:
        beta = self.beta(cur_nimg, step_nimg)
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for p, e in zip(generator.parameters(), ema_params)]
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # ema = beta * ema + (1 - beta) * p
        for b_ema, b in zip(self.model.buffers(), generator.buffers()):
            b_ema.copy_(b)
