"""The motion head: the style generator predicts how the photo moves, and frames are the photo warped.

Animating Landscape (Endo et al. 2019) and Eulerian Motion Fields (Holynski et al. 2021) both warp the input
instead of synthesising pixels: texture stays sharp, colours stay the photo's, and motion is a small, smooth
signal a small model can learn. Here the seed's network is unchanged up to its last layer; its final modulated
1×1 conv reads out `HEAD_CHANNELS` maps per frame instead of RGB:

- velocity (2): forward motion in px/frame at model resolution, `max_speed · tanh(·)`.
  `eulerian` (default): one steady field per video (the frames' predictions averaged), integrated over time by
  Euler steps along the flow (vsyn.nn.warp.integrate); it extends to any length and gives seamless loops.
  `lagrangian`: frame t's map is the mean velocity over [0, t], so frame t reads the photo at p − t·u_t(p); it can
  express motion that changes over the clip.
- moving (1): one logit map per video (averaged over frames, ×8 + 1: most pixels start moving); > 0 means "may
  move". It is applied as a hard
  0/1 mask in the forward pass (straight-through gradient in training), so wherever it is 0 the output pixel is
  the input pixel bit for bit: the ground is still by construction, not by training.
- blend (1) and appearance (3): where warping cannot explain a change (clouds forming, glints, disocclusion), frame
  t moves towards a synthesised appearance: out = warped + blend_t · (appearance_t − warped). The blend starts
  near 0 (bias −4) so an untrained head already returns the warped photo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from vsyn.nn.warp import fill_holes, integrate, loop_weights, sample_at, pixel_grid, warp

FIELD_KINDS = ("eulerian", "lagrangian")
HEAD_CHANNELS = 7  # velocity x, y; moving logit; blend logit; appearance r, g, b
BLEND_BIAS = -4.0
# The head's raw maps start small (std ~0.04 at init): a gain gives the mask logits room to vary over the image, and
# the bias starts most pixels moving, so training learns where to stop (the still prior pushes the same way).
MOVING_GAIN, MOVING_BIAS = 8.0, 1.0


@dataclass
class MotionFields:
    """One clip's motion, at one resolution (model or canvas). B videos, T' = `steps` generated frames."""

    velocity: Tensor  # eulerian (B, 2, h, w); lagrangian (B, T', 2, h, w) mean velocity over [0, t]; px/frame
    moving: Tensor  # (B, 1, h, w) logits, > 0 = may move
    blend: Tensor  # (B, T', 1, h, w) in [0, 1]
    appearance: Tensor  # (B, T', 3, h, w) in [0, 1]
    kind: str = "eulerian"

    @property
    def steps(self) -> int:
        return self.blend.shape[1]

    def step_velocity(self) -> Tensor:
        """(B, 2, h, w) velocity of one frame step: the Eulerian field, or a Lagrangian head's first step."""
        return self.velocity if self.kind == "eulerian" else self.velocity[:, 0]

    def offsets(self, steps: int | None = None) -> Tensor:
        """(B, steps, 2, h, w) backward-warp offsets of frames 1..steps (default T')."""
        steps = steps or self.steps
        if self.kind == "eulerian":
            return integrate(self.velocity, steps).transpose(0, 1)
        assert steps <= self.steps, f"a Lagrangian head predicted {self.steps} frames, not {steps}"
        t = torch.arange(1, steps + 1, device=self.velocity.device, dtype=self.velocity.dtype)
        return -t.view(1, -1, 1, 1, 1) * self.velocity[:, :steps]

    def masked(self, mask: Tensor) -> "MotionFields":
        """Scale motion and blend by a user mask (B, 1, h, w) in [0, 1]; its zeros also switch `moving` off."""
        m = mask.to(self.velocity.dtype)
        vel = self.velocity * (m if self.kind == "eulerian" else m[:, None])
        moving = torch.where(m > 0, self.moving, torch.full_like(self.moving, -1.0))
        return replace(self, velocity=vel, moving=moving, blend=self.blend * m[:, None])


def decode_head(raw: Tensor, kind: str, max_speed: float) -> MotionFields:
    """The head's raw maps (B, T', HEAD_CHANNELS, h, w) -> MotionFields."""
    assert raw.ndim == 5 and raw.shape[2] == HEAD_CHANNELS, raw.shape
    assert kind in FIELD_KINDS, kind
    raw = raw.float()
    velocity = max_speed * torch.tanh(raw[:, :, 0:2])
    if kind == "eulerian":
        velocity = velocity.mean(dim=1)
    return MotionFields(
        velocity=velocity,
        moving=MOVING_GAIN * raw[:, :, 2:3].mean(dim=1) + MOVING_BIAS,
        blend=torch.sigmoid(raw[:, :, 3:4] + BLEND_BIAS),
        appearance=(torch.tanh(raw[:, :, 4:7]) + 1) / 2,
        kind=kind,
    )


def moving_mask(logits: Tensor, *, straight_through: bool) -> Tensor:
    """Hard 0/1 mask from logits. `straight_through`: the forward value is still exactly 0/1, the gradient is the
    sigmoid's, so training sees what inference does."""
    hard = (logits > 0).to(logits.dtype)
    if not straight_through:
        return hard
    soft = torch.sigmoid(logits)
    return hard + (soft - soft.detach())


def moving_layer(image: Tensor, mask: Tensor) -> Tensor:
    """What the warp reads: the photo with its still pixels (mask 0) filled from the moving ones (warp.fill_holes),
    so that content moving out from behind a still occluder is sky or water, not the occluder dragged along.
    image (B, 3, H, W) float; mask (B, 1, H, W) of exact 0/1 values (its gradient, if any, does not flow here)."""
    return fill_holes(image, (mask.detach() > 0).to(torch.float32))


def compose(image: Tensor, offsets: Tensor, blend: Tensor, appearance: Tensor, mask: Tensor) -> Tensor:
    """Frames from the photo: image (B, 3, H, W) in [0, 1]; offsets (B, T, 2, H, W); blend (B, T, 1, H, W);
    appearance (B, T, 3, H, W); mask (B, 1, H, W) of exact 0/1 values -> (B, T, 3, H, W), float32.

    Where mask is 0 the result is `image` exactly: image + 0·(…) adds a signed zero. The warp reads the moving layer
    (`moving_layer`): still pixels never move, and moving ones never copy them.
    """
    b, t = offsets.shape[:2]
    img = image.float()
    layer = moving_layer(img, mask)
    frames = layer[:, None].expand(b, t, *img.shape[1:]).flatten(0, 1)
    warped = warp(frames, offsets.flatten(0, 1)).reshape(b, t, *img.shape[1:])
    out = warped + blend.float() * (appearance.float() - warped)
    return img[:, None] + mask.float()[:, None] * (out - img[:, None])


def loop_frames(image: Tensor, velocity: Tensor, blend: Tensor, appearance: Tensor, mask: Tensor) -> Tensor:
    """A seamless loop of N = blend.shape[1] + 1 frames (frame 0 included), Holynski-style symmetric warping.

    Frame t blends the photo carried t steps along the flow (weight 1 − t/N) with the photo carried N − t steps
    against it (weight t/N): frame N would be frame 0 again. The blend towards `appearance` fades in and out with
    sin(π·t/N), so it is 0 at both ends of the loop. image (B, 3, H, W); velocity (B, 2, H, W) -> (B, N, 3, H, W).
    """
    b, steps = blend.shape[:2]
    n = steps + 1
    img = image.float()
    layer = moving_layer(img, mask)
    back = integrate(velocity, steps, backward=True)  # frames 1..N−1
    fwd = integrate(velocity, steps, backward=False)  # frames −1..−(N−1); frame t needs entry N−t−1
    w = loop_weights(n, device=img.device)[1:].view(steps, 1, 1, 1, 1)
    grid = pixel_grid(*img.shape[-2:], device=img.device)
    frames = []
    for t in range(1, n):
        a = sample_at(layer, grid + back[t - 1])
        c = sample_at(layer, grid + fwd[n - t - 1])
        frames.append(w[t - 1] * a + (1 - w[t - 1]) * c)
    warped = torch.stack(frames, dim=1)
    fade = torch.sin(torch.pi * torch.arange(1, n, device=img.device) / n).view(1, steps, 1, 1, 1)
    out = warped + fade * blend.float() * (appearance.float() - warped)
    moved = img[:, None] + mask.float()[:, None] * (out - img[:, None])
    return torch.cat([img[:, None], moved], dim=1)
