"""Warping a frame by a displacement field, and turning a velocity field into per-frame displacements.

The one place vsyn resamples images (the motion head in training, full-resolution rendering at inference).

Conventions (docs/contracts.md): a field is (N, 2, H, W) in pixels, x then y. A *velocity* is forward motion in px
per frame: content at p moves to p + v(p). An *offset* is what backward warping reads: out(p) = image(p + offset(p)).
So a still field is offset 0 and the frame is returned unchanged; a steady translation by v gives offset −t·v at
frame t.

Sampling is bilinear with border clamping, computed in float32 with autocast off whatever the input dtype (bf16
coordinates would be off by up to half a pixel at 256 px), and returns the image's dtype. No host synchronisation
and no data-dependent shapes, so it runs inside CUDA graphs; it accepts channels-last inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_grid(height: int, width: int, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """(1, 2, H, W) pixel coordinates: channel 0 is x (column), channel 1 is y (row)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None]


def _normalised(positions: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, H', W') pixel positions in an image of (height, width) -> grid_sample's (N, H', W', 2) in [-1, 1]
    (align_corners=True: pixel centres at −1 and 1)."""
    h, w = height, width
    # Python scalars, not a small tensor built from a list: that would be a host-to-device copy inside CUDA graphs
    gx = positions[:, 0] * (2.0 / max(w - 1, 1)) - 1
    gy = positions[:, 1] * (2.0 / max(h - 1, 1)) - 1
    return torch.stack([gx, gy], dim=-1)


def sample_at(image: Tensor, positions: Tensor) -> Tensor:
    """image (N, C, H, W) sampled at absolute pixel positions (N, 2, H', W') -> (N, C, H', W'), bilinear, border."""
    assert image.ndim == 4 and positions.ndim == 4 and positions.shape[1] == 2, (image.shape, positions.shape)
    assert positions.shape[0] == image.shape[0], (image.shape, positions.shape)
    with torch.autocast(image.device.type, enabled=False):
        grid = _normalised(positions.float(), *image.shape[-2:])
        out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(image.dtype)


def warp(image: Tensor, offset: Tensor) -> Tensor:
    """Backward warp: out(p) = image(p + offset(p)). image (N, C, H, W), offset (N, 2, H, W) in px."""
    assert offset.shape[-2:] == image.shape[-2:], (image.shape, offset.shape)
    grid = pixel_grid(*image.shape[-2:], device=image.device)
    return sample_at(image, grid + offset.float())


def fill_holes(image: Tensor, valid: Tensor) -> Tensor:
    """`image` with its invalid pixels filled from the valid ones by pull-push (Gortler et al. 1996): averages of the
    valid pixels over ever coarser 2×2 blocks, then back up, each level keeping what its own valid pixels cover and
    taking the rest from the level above. Valid pixels come back bit for bit; holes get a smooth extension.

    The motion head warps the *moving layer*: a moving pixel whose source lies under a still occluder (a tree, a
    rock, the land) would otherwise copy the occluder into the sky and drag it along (sky smears, dragged spire tips);
    with the layer filled it reads sky. On procedural scenes with the true flow and mask this cuts the warp's error
    on moving pixels 3-4x (bench/RESULTS.md). image (N, C, H, W); valid (N, 1, H, W) of 0/1 -> (N, C, H, W) float32.
    With no valid pixel at all the result is 0 (nothing moves then, so nothing reads it).
    """
    assert image.ndim == 4 and valid.ndim == 4 and valid.shape[1] == 1, (image.shape, valid.shape)
    with torch.autocast(image.device.type, enabled=False):
        weight = valid.float().expand(image.shape[0], 1, *image.shape[-2:])
        nums, dens = [image.float() * weight], [weight]
        while max(nums[-1].shape[-2:]) > 1:  # down to 1×1: every hole then has a valid pixel above it
            kernel = tuple(2 if n > 1 else 1 for n in nums[-1].shape[-2:])
            nums.append(F.avg_pool2d(nums[-1], kernel, ceil_mode=True))
            dens.append(F.avg_pool2d(dens[-1], kernel, ceil_mode=True))
        out = nums[-1] / dens[-1].clamp_min(1e-12)
        for num, den in zip(reversed(nums[:-1]), reversed(dens[:-1])):
            up = F.interpolate(out, size=num.shape[-2:], mode="bilinear", align_corners=False)
            out = num + (1 - den) * up  # num = den · (mean of the valid pixels): coverage-weighted blend
    return out


def integrate(velocity: Tensor, steps: int, *, backward: bool = True) -> Tensor:
    """Offsets of `steps` frames from a steady (Eulerian) velocity field, by Euler steps along the flow.

    velocity (N, 2, H, W) px/frame -> (steps, N, 2, H, W): entry k−1 holds the offset that shows frame k when
    `backward` (where the content now at p was k frames earlier: q ← q − v(q)), or frame −k when not (where it will
    be: q ← q + v(q)), both sampled at the moving point q, so the path bends with the field (Holynski et al. 2021).
    """
    assert velocity.ndim == 4 and velocity.shape[1] == 2, velocity.shape
    v = velocity.float()
    grid = pixel_grid(*v.shape[-2:], device=v.device)
    sign = -1.0 if backward else 1.0
    q = grid.expand_as(v)
    out = []
    for _ in range(steps):
        q = q + sign * sample_at(v, q)
        out.append(q - grid)
    return torch.stack(out) if out else v.new_zeros(0, *v.shape)


def loop_weights(frames: int, crossfade: float = 0.5, device: torch.device | str | None = None) -> Tensor:
    """(frames,) weight of the backward-integrated warp in a seamless loop of N = `frames` frames.

    Frame t of the loop blends frame 0 carried t steps along the flow (weight w_t) with frame 0 carried N − t steps
    against it (weight 1 − w_t); frame N would be frame 0 again. w falls from 1 to 0 by a smoothstep over the middle
    `crossfade` fraction of the loop and is flat elsewhere, so the last frame is one plain step away from frame 0
    and the two copies are blended (which blurs: two views N steps apart) only in the middle. crossfade=1 spreads
    the blend over the whole loop (Holynski et al. 2021 blend linearly over all of it).
    """
    if not 0 < crossfade <= 1:
        raise ValueError(f"crossfade must be in (0, 1], not {crossfade}")
    phase = torch.arange(frames, device=device, dtype=torch.float32) / frames
    a = ((phase - (1 - crossfade) / 2) / crossfade).clamp(0, 1)
    return 1 - a * a * (3 - 2 * a)
