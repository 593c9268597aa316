"""FID per frame over generated frames only (lower is better).

Frame 0 of a generated clip is the conditioning input, copied verbatim; counting it would reward a model for the
real data it was given (method.md §7). The protocol's indices (default 1..16) pick the frames on both sides: real
frames at the same indices of the true clips. Each frame is one sample; features are pytorch-fid's 2048-d pool3.
Precision as for FVD: fp32, TF32 off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vsyn.errors import VsynError
from vsyn.metrics.protocol import Protocol
from vsyn.metrics.utils import exact_matmul, to_uint8_values


def load_image_detector(protocol: Protocol, path: str | Path | None = None, sha256: str | None = None,
                        device: str | torch.device = "cpu") -> tuple[torch.nn.Module, str]:
    if protocol.detector != "inception-fid":
        raise VsynError(f"protocol {protocol.name}: {protocol.detector} is not an image detector")
    from vsyn.metrics.inception import load_fid_inception

    model, digest = load_fid_inception(path, sha256)
    return model.to(device), digest


def prepare_frames(clips: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B*F, 3, H, W) float32 in [0,1] (generated frames rounded to uint8 values first)."""
    if clips.shape[1] < protocol.clip_length:
        raise VsynError(f"protocol {protocol.name} needs clips of {protocol.clip_length} frames, got {clips.shape[1]}")
    x = clips[:, protocol.indices]
    x = to_uint8_values(x) / 255.0 if (protocol.quantize or x.dtype == torch.uint8) else x.float()
    return x.reshape(-1, *x.shape[2:])


@torch.no_grad()
def frame_features(detector: torch.nn.Module, clips: torch.Tensor, protocol: Protocol, *, batch: int = 64,
                   bf16: bool = False) -> np.ndarray:
    """(B, T, 3, H, W) -> (B*F, 2048) float64 features, `batch` frames per call."""
    device = next(iter(detector.parameters()), torch.empty(0)).device
    frames = prepare_frames(clips, protocol)
    out = []
    with exact_matmul():
        for i in range(0, frames.shape[0], batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(detector(frames[i:i + batch].to(device)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(detector, "feature_dim", 2048)))
