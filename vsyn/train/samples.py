"""Sample sheets at fixed kimg: the EMA generator animates a fixed set of input images with fixed noise, so
successive sheets are comparable; written as mp4 and animated GIF (PyAV through vsyn.video), reals on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vsyn.video import encode_video, video_grid


class SampleSheet:
    def __init__(self, real: torch.Tensor, noise: torch.Tensor | None, fps: float = 8.0) -> None:
        """real: uint8 (N,T,3,H,W) clips whose frame 0 is animated; noise: (N, noise_dim) or None."""
        self.real, self.noise, self.fps = real, noise, fps

    @torch.no_grad()
    def write(self, generator: nn.Module, out_dir: Path, stem: str) -> list[Path]:
        device = next(generator.parameters()).device
        real = self.real.to(device).float() / 255
        noise = None if self.noise is None else self.noise.to(device)
        fake = generator(real[:, 0], num_frames=real.shape[1], noise=noise)
        both = torch.cat([real, fake.float()])  # row of reals, row of fakes
        clips = (both.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
        grid = video_grid(clips, columns=real.shape[0])
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for fmt in ("mp4", "gif"):
            path = out_dir / f"{stem}.{fmt}"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(encode_video(np.ascontiguousarray(grid), fps=self.fps, fmt=fmt))
            tmp.replace(path)
            paths.append(path)
        return paths
