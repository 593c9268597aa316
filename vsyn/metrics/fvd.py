"""FVD: Fréchet distance between I3D features of real and generated clips (lower is better).

Pipeline per clip (B, T, 3, H, W), uint8 or float [0,1]:
  frames at `protocol.indices` -> values 0..255 (generated frames rounded like the real ones) -> resize per
  protocol (bilinear 224 stretch, short side + centre crop, or none for the TorchScript that resizes itself) ->
  the detector's range -> (B, 3, T, S, S) -> 400-d time-averaged logits -> float64.

Precision: the detector runs in fp32 with TF32 off by default: features feed a covariance and a matrix square
root, and bf16 (8-bit mantissa) moves logits by ~1e-2 relative, enough to shift FVD by whole points. `bf16=True`
is allowed for quick in-training tracking only; its numbers are not comparable and the card records it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vsyn.errors import VsynError
from vsyn.metrics.protocol import Protocol
from vsyn.metrics.utils import exact_matmul, resize_frames, to_uint8_values


def load_video_detector(protocol: Protocol, path: str | Path | None = None, sha256: str | None = None,
                        device: str | torch.device = "cpu") -> tuple[torch.nn.Module, str]:
    """The detector the protocol names, from user-given weights. Returns (module on device, sha256)."""
    if protocol.detector == "i3d-videogpt":
        from vsyn.metrics.i3d import load_i3d

        model, digest = load_i3d(path, sha256)
    elif protocol.detector == "i3d-stylegan-v":
        from vsyn.metrics.i3d import load_stylegan_v_i3d

        model, digest = load_stylegan_v_i3d(path, sha256)
    else:
        raise VsynError(f"protocol {protocol.name}: {protocol.detector} is not a video detector")
    return model.to(device), digest


def prepare_clips(clips: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 or [0,1] float -> (B, 3, F, S, S) float32 in the detector's range."""
    if clips.ndim != 5 or clips.shape[2] != 3:
        raise ValueError(f"clips must be (B, T, 3, H, W), got {tuple(clips.shape)}")
    if clips.shape[1] < protocol.clip_length:
        raise VsynError(f"protocol {protocol.name} needs clips of {protocol.clip_length} frames (indices "
                        f"{protocol.indices[0]}..{protocol.indices[-1]}), got {clips.shape[1]}")
    x = clips[:, protocol.indices]
    if protocol.quantize or x.dtype == torch.uint8:
        x = to_uint8_values(x)
    else:
        x = x.float() * 255
    b, f, c, h, w = x.shape
    x = resize_frames(x.reshape(b * f, c, h, w), protocol.size, protocol.resize)
    x = x.reshape(b, f, c, *x.shape[-2:]).transpose(1, 2)
    if protocol.value_range == "[-1,1]":
        x = x * (2.0 / 255.0) - 1.0
    elif protocol.value_range != "[0,255]":
        raise VsynError(f"protocol {protocol.name}: unsupported value range {protocol.value_range}")
    return x.contiguous()


@torch.no_grad()
def video_features(detector: torch.nn.Module, clips: torch.Tensor, protocol: Protocol, *, batch: int = 16,
                   bf16: bool = False, tf32: bool = False) -> np.ndarray:
    """(B, T, 3, H, W) -> (B, 400) float64 features; `batch` clips per detector call, on the detector's device.
    `tf32`/`bf16` are for benchmarking the trade-off only (bench/eval.py); the metrics use neither."""
    device = next(iter(detector.parameters()), torch.empty(0)).device
    out = []
    with exact_matmul(enabled=not tf32):
        for i in range(0, clips.shape[0], batch):
            x = prepare_clips(clips[i:i + batch].to(device), protocol)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(detector(x).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(detector, "feature_dim", 400)))
