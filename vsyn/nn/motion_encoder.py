"""The motion encoder: infers the latent z that explains a real clip's motion, for reconstruction training.

A GAN alone lets the generator ignore its latent (every future of a photo the same) and, on the motion head, shut
the moving mask (a still clip is easier to pass off than imperfect motion: bench/RESULTS.md, the studies of
2026-12-03 to 2026-12-08). Animating Landscape (Endo et al. 2019) and BicycleGAN's cVAE-GAN (Zhu et al. 2017) train
the generator to *reconstruct* a real clip from its first frame and a code an encoder reads off the whole clip,
with a KL term keeping the codes near the prior N(0, I) that inference samples. The latent must then carry what the
photo does not say (here: which way and how fast this clip moves), and the mask can open where warping the photo's
moving layer explains the clip. Only the training clip's own frames are used: no ground truth, as with real videos.

Inference never runs this module; it is part of the generator so that one optimizer, one EMA and one checkpoint
cover it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vsyn.nn.layers import DownBlock

INITIAL_LOGVAR = -2.0  # σ ≈ 0.37 at the start: each clip's code is not drowned in noise before training begins


def encoder_frame_indices(frames: int) -> list[int]:
    """Frames the encoder reads: 0, 1, 2, 4, 8, … and the last. Small gaps see fast motion without aliasing, large
    gaps see slow motion; a handful of frames keeps the input small whatever the clip length."""
    idx, gap = [0], 1
    while gap < frames - 1:
        idx.append(gap)
        gap *= 2
    return idx + [frames - 1]


class MotionEncoder(nn.Module):
    """Clip (B, T, 3, H, W) in [0, 1] -> posterior mean and log-variance of z, each (B, noise_dim).

    The input stacks, per selected frame t, the frame, its difference D_t to frame 0 and the Lucas–Kanade products
    D_t·∂I₀/∂x and D_t·∂I₀/∂y of the grey levels. Under brightness constancy D_t ≈ −t·(u·∂I₀/∂x + v·∂I₀/∂y), so the
    products' averages point against the motion: a direction the network can read at its first step. Without
    them a global average of conv features is nearly blind to the sign of a translation, and the generator learns
    to ignore z before the encoder tells directions apart. Then a stem conv, down blocks to 4×4, a global average
    and one linear layer, which also reads the input channels' global averages (a straight path for those cues:
    through the random conv stack at initialisation they reach z 10× weaker than the code's spread).
    """

    def __init__(self, resolution: int, frames: int, noise_dim: int, ch: int):
        super().__init__()
        self.frames, self.noise_dim = frames, noise_dim
        self.indices = encoder_frame_indices(frames)
        in_ch = 3 * len(self.indices) + 5 * (len(self.indices) - 1)
        widths = [ch * m for m in (1, 2, 4, 8, 8, 8, 8)]
        levels = max(1, resolution.bit_length() - 1 - 2)  # down to 4×4
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        self.blocks = nn.Sequential(*(DownBlock(widths[i], widths[i + 1]) for i in range(levels)))
        self.out = nn.Linear(widths[levels] + in_ch, 2 * noise_dim)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.out.bias[noise_dim:] = INITIAL_LOGVAR

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        assert clip.ndim == 5 and clip.shape[1] == self.frames, (
            f"clip must be (B, {self.frames}, 3, H, W), got {tuple(clip.shape)}"
        )
        x = clip[:, self.indices].float() * 2 - 1  # (B, n, 3, H, W)
        diffs = x[:, 1:] - x[:, :1]
        grey = x.mean(dim=2)  # (B, n, H, W)
        gy, gx = torch.gradient(grey[:, :1], dim=(-2, -1))  # frame 0's: central, one-sided at the borders
        dt = grey[:, 1:] - grey[:, :1]
        products = torch.stack([dt * gx, dt * gy], dim=2)  # (B, n−1, 2, H, W)
        stacked = torch.cat([x.flatten(1, 2), diffs.flatten(1, 2), products.flatten(1, 2)], dim=1)
        # each channel over its RMS (its mean's sign kept): slow motion gives tiny differences and products
        stacked = stacked / stacked.pow(2).mean(dim=(2, 3), keepdim=True).add(1e-8).sqrt()
        h = self.stem(stacked)
        h = torch.relu(self.blocks(h)).mean(dim=(2, 3))
        h = torch.cat([h, stacked.mean(dim=(2, 3))], dim=1)  # a linear path from the global motion cues
        mu, logvar = self.out(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


def reparameterise(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = μ + σ·ε with ε ~ N(0, I) drawn by the caller (the step's random stream)."""
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)


def kl_to_prior(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)), summed over z's dimensions, averaged over the batch (closed form)."""
    return 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(dim=1).mean()
