"""Small stand-ins shared by the metrics tests: random tiny detectors and in-memory procedural loaders."""

from __future__ import annotations

import numpy as np
import torch


class TinyVideoDetector(torch.nn.Module):
    """A random 3-D conv feature extractor standing in for I3D in pipeline tests (speed, not realism)."""

    feature_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        motion = x[:, :, 1:] - x[:, :, :-1]  # sensitive to change over time, like a real video detector should be
        return self.conv(motion).abs().mean(dim=(2, 3, 4)) * 10 + x.mean(dim=(2, 3, 4)).repeat(1, 3)[:, :8]


class TinyImageDetector(torch.nn.Module):
    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) * 10


def procedural_clips(n: int, size: int, frames: int, offset: int = 0) -> list[dict]:
    from shards.procedural import make_clip

    return [make_clip(offset + i, size, frames) for i in range(n)]


def loader_from(clips: list[dict], batch: int = 4):
    """Yields the contract's batches: video uint8 (B,T,3,H,W), flow (B,T-1,2,H,W), mask (B,H,W)."""
    for i in range(0, len(clips), batch):
        part = clips[i:i + batch]
        yield {"video": torch.from_numpy(np.stack([c["video"] for c in part])).permute(0, 1, 4, 2, 3).contiguous(),
               "flow": torch.from_numpy(np.stack([c["flow"] for c in part])),
               "mask": torch.from_numpy(np.stack([c["mask"] for c in part]))}


class Oracle:
    """A 'generator' that returns the true clip whose first frame it is given (so every distance must be ~0)."""

    def __init__(self, clips: list[dict]) -> None:
        self.by_first = {c["video"][0].tobytes(): torch.from_numpy(c["video"]).permute(0, 3, 1, 2) for c in clips}

    def __call__(self, images: torch.Tensor, num_frames: int) -> torch.Tensor:
        keys = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return torch.stack([self.by_first[k.numpy().tobytes()][:num_frames].float() / 255 for k in keys])
