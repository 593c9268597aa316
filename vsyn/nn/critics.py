"""DVD-GAN's decomposed critics (method.md §3): a per-frame spatial critic and a clip-level temporal critic.

Every conv and linear layer is spectral-normalised; there is no normalisation layer and no sigmoid. Only reshapes
and ordinary ops are used, so both run under channels_last memory format and bf16 autocast unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vsyn.config import ModelConfig
from vsyn.nn.layers import DownBlock, SelfAttention, is_channels_last


class SpatialCritic(nn.Module):
    """Scores single frames, each concatenated with the input frame when `conditional` (6 input channels).

    Five 2× down-samplings, attention after the second, ReLU, sum over space, SN-linear: one score per frame.
    """

    def __init__(self, resolution: int, ch: int = 16, conditional: bool = True):
        super().__init__()
        if resolution < 32:
            raise ValueError(f"SpatialCritic needs resolution >= 32 (5 down-samplings), not {resolution}")
        self.resolution, self.conditional = resolution, conditional
        self.blocks = nn.Sequential(
            DownBlock(6 if conditional else 3, 2 * ch, sn=True, first=True),
            DownBlock(2 * ch, 4 * ch, sn=True),
            SelfAttention(4 * ch),
            DownBlock(4 * ch, 8 * ch, sn=True),
            DownBlock(8 * ch, 16 * ch, sn=True),
            DownBlock(16 * ch, 16 * ch, sn=True),
        )
        self.head = spectral_norm(nn.Linear(16 * ch, 1))

    def forward(self, frames: Tensor, cond: Tensor) -> Tensor:
        """frames (B, K, 3, H, W), cond (B, 3, H, W), both in [0, 1] -> scores (B, K)."""
        b, k = frames.shape[:2]
        r = self.resolution
        assert frames.shape[2:] == (3, r, r) and cond.shape == (b, 3, r, r), (frames.shape, cond.shape)
        x = frames.flatten(0, 1)
        if self.conditional:
            x = torch.cat([x, cond.repeat_interleave(k, dim=0)], dim=1)
        h = self.blocks(x * 2 - 1)
        return self.head(F.relu(h).sum(dim=(2, 3))).reshape(b, k)


class TemporalCritic(nn.Module):
    """Scores whole clips (frame 0 included), unconditionally: a 3D stem and 3D ResBlock halve time twice, then each
    remaining temporal slice goes through attention and 2D ResBlocks: one score per (video, temporal slice).

    `prepool=True` is DVD-GAN's 2× spatial average-pool of the input (off in the original's final runs).
    """

    def __init__(self, resolution: int, ch: int = 64, frames: int = 25, prepool: bool = False):
        super().__init__()
        side = resolution // 2 if prepool else resolution
        if frames < 4 or side < 32:
            raise ValueError(f"TemporalCritic needs frames >= 4 and a (pre-pooled) side >= 32, got {frames}, {side}")
        self.resolution, self.frames, self.prepool = resolution, frames, prepool
        self.blocks3d = nn.Sequential(
            DownBlock(3, 2 * ch, sn=True, first=True, dims=3),
            DownBlock(2 * ch, 4 * ch, sn=True, dims=3),
        )
        self.blocks2d = nn.Sequential(
            SelfAttention(4 * ch),
            DownBlock(4 * ch, 8 * ch, sn=True),
            DownBlock(8 * ch, 16 * ch, sn=True),
            DownBlock(16 * ch, 16 * ch, sn=True),
        )
        self.head = spectral_norm(nn.Linear(16 * ch, 1))

    def num_slices(self, frames: int | None = None) -> int:
        """S, the number of scores per clip of `frames` frames (time is halved twice, flooring)."""
        return (frames or self.frames) // 2 // 2

    def forward(self, video: Tensor) -> Tensor:
        """video (B, T, 3, H, W) in [0, 1] -> scores (B, S)."""
        b, t = video.shape[:2]
        r = self.resolution
        assert video.shape[2:] == (3, r, r), video.shape
        x = video.transpose(1, 2) * 2 - 1  # (B, 3, T, H, W)
        if _is_channels_last_3d(self.blocks3d[0].conv1):
            x = x.contiguous(memory_format=torch.channels_last_3d)  # one copy; cuDNN's fast NDHWC kernels follow
        if self.prepool:
            x = F.avg_pool3d(x, (1, 2, 2))
        h = self.blocks3d(x)  # (B, 4ch, S, h, w)
        s = h.shape[2]
        h = self.blocks2d(h.transpose(1, 2).flatten(0, 1))  # (B·S, 16ch, h', w')
        return self.head(F.relu(h).sum(dim=(2, 3))).reshape(b, s)


def _is_channels_last_3d(conv: nn.Module) -> bool:
    """Whether a (spectral-normalised) Conv3d's stored weight is channels_last_3d (vsyn.nn.to_channels_last)."""
    weight = conv.parametrizations.weight.original if hasattr(conv, "parametrizations") else conv.weight
    return is_channels_last(weight)


class Critics(nn.Module):
    """Both critics in one module, so they share one optimizer (and one DeepSpeed engine)."""

    def __init__(self, spatial: SpatialCritic, temporal: TemporalCritic):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal

    def forward(self, video: Tensor, frame_idx: Tensor) -> tuple[Tensor, Tensor]:
        """video (B, T, 3, H, W), frame_idx (K,) -> spatial scores (B, K) of those frames against frame 0,
        temporal scores (B, S)."""
        return self.spatial(video[:, frame_idx], video[:, 0]), self.temporal(video)


def sample_frame_indices(
    frames: int, k: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """K distinct indices from 1..frames−1 (frame 0, the input, is never shown to the spatial critic)."""
    assert 1 <= k <= frames - 1, (frames, k)
    source = generator.device if generator is not None else "cpu"
    return (torch.randperm(frames - 1, generator=generator, device=source)[:k] + 1).to(device)


def build_critics(model_cfg: ModelConfig) -> Critics:
    """The critics a `vsyn.config.ModelConfig` describes."""
    m = model_cfg
    return Critics(
        SpatialCritic(m.resolution, m.ch_ds, conditional=True),
        TemporalCritic(m.resolution, m.ch_dt, m.frames, prepool=m.dt_prepool),
    )
