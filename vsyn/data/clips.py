"""Clip-level augmentation on numpy arrays: temporal window, horizontal flip, crop, resize. Motion labels follow the
pixels.

Shapes: video uint8 (T,H,W,3); flow float (T-1,2,H,W) in pixels per frame, dx then dy; mask uint8 (H,W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Clip:
    video: np.ndarray
    flow: np.ndarray | None = None
    mask: np.ndarray | None = None


def window(stored: int, frames: int, stride: int, rng: np.random.Generator | None) -> list[int]:
    """Indices of ``frames`` frames ``stride`` apart: a random start with ``rng``, else the first frame."""
    span = (frames - 1) * stride + 1
    if span > stored:
        raise ValueError(f"clip has {stored} frames; {frames} frames at stride {stride} need {span}")
    start = int(rng.integers(0, stored - span + 1)) if rng is not None else 0
    return list(range(start, start + span, stride))


def window_flow(flow: np.ndarray, indices: list[int]) -> np.ndarray:
    """Displacement between consecutive chosen frames, summing per-frame flows over each stride.

    Exact at stride 1 and for uniform motion; otherwise a first-order approximation (it ignores that a point moves
    into a region with different velocity within the stride)."""
    return np.stack([flow[a:b].astype(np.float32).sum(0) for a, b in zip(indices[:-1], indices[1:])])


def hflip(clip: Clip) -> Clip:
    """Mirror left-right; the horizontal flow component changes sign."""
    flow = None
    if clip.flow is not None:
        flow = clip.flow[..., ::-1].copy()
        flow[:, 0] *= -1
    mask = clip.mask[:, ::-1] if clip.mask is not None else None
    return Clip(clip.video[:, :, ::-1], flow, mask)


def crop(clip: Clip, size: int, rng: np.random.Generator | None) -> Clip:
    """A ``size`` x ``size`` window: random with ``rng``, else centred."""
    h, w = clip.video.shape[1:3]
    if size > min(h, w):
        raise ValueError(f"clip is {h}x{w}, smaller than the requested {size} px")
    y = int(rng.integers(0, h - size + 1)) if rng is not None else (h - size) // 2
    x = int(rng.integers(0, w - size + 1)) if rng is not None else (w - size) // 2
    return Clip(
        clip.video[:, y : y + size, x : x + size],
        clip.flow[..., y : y + size, x : x + size] if clip.flow is not None else None,
        clip.mask[y : y + size, x : x + size] if clip.mask is not None else None,
    )


def fit(clip: Clip, size: int) -> Clip:
    """Short side resized to ``size`` (aspect kept), then the centre square: what the packer and `vsyn animate` do
    to a picture, so a model fed larger clips sees whole scenes, never a silent crop of a quarter of each.

    Frames: Lanczos, as `vsyn.inference.fit_image`. Flow: each component area-averaged (box filter) and scaled by
    the resize factor of its axis, so it stays in pixels per frame of the new grid. Mask: nearest neighbour.
    Only shrinks: a clip smaller than ``size`` raises.
    """
    h, w = clip.video.shape[1:3]
    if (h, w) == (size, size):
        return clip
    if size > min(h, w):
        raise ValueError(f"clip is {h}x{w}, smaller than the requested {size} px")
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    video = np.stack([np.asarray(Image.fromarray(f).resize((nw, nh), Image.Resampling.LANCZOS)) for f in clip.video])
    flow = None
    if clip.flow is not None:
        factors = (nw / w, nh / h)  # dx, dy
        flow = np.stack([
            np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f[c], np.float32), mode="F")
                                 .resize((nw, nh), Image.Resampling.BOX)) * factors[c] for c in (0, 1)])
            for f in clip.flow
        ]).astype(np.float32)
    mask = None
    if clip.mask is not None:
        mask = np.asarray(Image.fromarray(clip.mask).resize((nw, nh), Image.Resampling.NEAREST))
    return crop(Clip(video, flow, mask), size, None)
