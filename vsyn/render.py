"""Full-resolution animation with the motion head: the model sees the photo small, the photo moves at its own size.

The network runs at its square training resolution R. A photo of any aspect is resized (aspect kept) so its short
side is R: the *canvas*. Square R×R windows cover the canvas along its long side, overlapping evenly; each window
gets its fields from the model (one batch, the same latent noise for all), and overlapping windows are averaged
with tent weights, so a panorama is animated without a centre crop and without seams. The fields are then
upsampled to the output size (displacements scaled by the size ratio) and warp the photo itself, a few frames at a
time: memory stays bounded by one chunk, never (T, 3, H, W) at full resolution.

Still pixels are still bit for bit: where the moving mask (and the user's mask, if any) is 0, the output pixel is
the input's uint8 value, selected, not computed.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vsyn.errors import VsynError
from vsyn.nn.motion import MotionFields
from vsyn.nn.motion import moving_layer
from vsyn.nn.warp import integrate, loop_weights, pixel_grid, sample_at

DEFAULT_MAX_SIDE = 1920
CHUNK_PIXELS = 8_000_000  # output pixels rendered at once (frames × H × W): ~4 frames of 1080p
T = TypeVar("T")


@dataclass(frozen=True)
class Canvas:
    """The photo at model scale (short side = resolution) and the square windows the model sees along its long axis."""

    height: int
    width: int
    resolution: int
    starts: tuple[int, ...]  # window offsets along the long axis (columns for landscape, rows for portrait)

    @property
    def landscape(self) -> bool:
        return self.width >= self.height


def plan_canvas(height: int, width: int, resolution: int) -> Canvas:
    """Canvas for a (height, width) photo: short side = resolution, windows spaced evenly, the first and last flush
    with the edges, as few as cover it (a square photo is one window)."""
    if height < 1 or width < 1:
        raise VsynError(f"image has no pixels ({width}x{height})")
    scale = resolution / min(height, width)
    ch, cw = max(resolution, round(height * scale)), max(resolution, round(width * scale))
    long_side = max(ch, cw)
    n = max(1, math.ceil(long_side / resolution - 1e-9))
    starts = tuple(round(i * (long_side - resolution) / (n - 1)) for i in range(n)) if n > 1 else (0,)
    return Canvas(ch, cw, resolution, starts)


def canvas_views(photo: np.ndarray, canvas: Canvas) -> np.ndarray:
    """uint8 (H, W, 3) photo -> uint8 (n, R, R, 3): the photo resized to the canvas, cut into its windows."""
    img = np.asarray(Image.fromarray(photo).resize((canvas.width, canvas.height), Image.Resampling.LANCZOS))
    r = canvas.resolution
    if canvas.landscape:
        return np.stack([img[:, s : s + r] for s in canvas.starts])
    return np.stack([img[s : s + r] for s in canvas.starts])


def _tent(r: int, device: torch.device) -> torch.Tensor:
    """(r,) window weights along the long axis: highest in the middle, > 0 at the edges."""
    i = torch.arange(r, device=device, dtype=torch.float32)
    return torch.minimum(i + 1, r - i)


def stitch(fields: MotionFields, canvas: Canvas) -> MotionFields:
    """Per-window fields (n windows at R×R) -> one video's fields over the whole canvas (batch 1, Hc×Wc)."""
    r = canvas.resolution
    assert fields.moving.shape[0] == len(canvas.starts), (fields.moving.shape, canvas.starts)
    tent = _tent(r, fields.moving.device)
    weight = torch.zeros(canvas.height, canvas.width, device=fields.moving.device)
    for s in canvas.starts:
        if canvas.landscape:
            weight[:, s : s + r] += tent
        else:
            weight[s : s + r, :] += tent[:, None]

    def place(x: torch.Tensor) -> torch.Tensor:  # (n, ..., R, R) -> (1, ..., Hc, Wc)
        out = x.new_zeros(1, *x.shape[1:-2], canvas.height, canvas.width)
        for window, s in zip(x.float(), canvas.starts):
            if canvas.landscape:
                out[0, ..., s : s + r] += window * tent
            else:
                out[0, ..., s : s + r, :] += window * tent[:, None]
        return out / weight

    return MotionFields(place(fields.velocity), place(fields.moving), place(fields.blend), place(fields.appearance),
                        kind=fields.kind)


def output_size(height: int, width: int, size: str | int, *, max_side: int = DEFAULT_MAX_SIDE,
                resolution: int | None = None) -> tuple[int, int]:
    """(h, w) of the video for a (height, width) photo. `size`: "input" (the photo's own size), "model" (the model's
    square), or a long side in px; then the long side is capped at `max_side` and both sides made even (H.264)."""
    if size == "model":
        if resolution is None:
            raise ValueError("size='model' needs the model resolution")
        return resolution, resolution
    if size == "input":
        long_side = max(height, width)
    else:
        long_side = int(size)
        if long_side < 2:
            raise VsynError(f"size must be 'input', 'model' or a long side >= 2 px, not {size!r}")
    if max_side < 2:
        raise VsynError(f"max side must be >= 2 px, not {max_side}")
    long_side = min(long_side, max_side)
    scale = long_side / max(height, width)
    h, w = max(2, round(height * scale)), max(2, round(width * scale))
    return h - h % 2, w - w % 2


def _resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _resize_offsets(offsets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(k, 2, h, w) offsets in px of the source grid -> (k, 2, H, W) in px of the target grid."""
    h, w = offsets.shape[-2:]
    up = _resize_maps(offsets, size)
    return torch.stack([up[:, 0] * (size[1] / w), up[:, 1] * (size[0] / h)], dim=1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def render(photo: np.ndarray, fields: MotionFields, size: tuple[int, int], num_frames: int, *, loop: bool = False,
           mask: np.ndarray | None = None, chunk_pixels: int = CHUNK_PIXELS,
           device: torch.device | str = "cpu") -> Iterator[np.ndarray]:
    """Frames of the animation at `size` (h, w), yielded as uint8 chunks (k, h, w, 3), frame 0 = the photo.

    photo: uint8 (H, W, 3) at any size (resized once to `size` if it differs). fields: one video's canvas fields
    (batch 1) for at least num_frames − 1 steps. mask: optional float (H', W') in [0, 1], white = may move; scales the
    motion and blend, and wherever it is 0 the output is the photo bit for bit. `loop`: a seamless loop of
    `num_frames` frames (needs a steady velocity; a Lagrangian head's first step is used).
    """
    h, w = size
    device = torch.device(device)
    base_np = photo if photo.shape[:2] == (h, w) else np.asarray(
        Image.fromarray(photo).resize((w, h), Image.Resampling.LANCZOS))
    base_u8 = torch.tensor(base_np, device=device).permute(2, 0, 1)[None]  # (1, 3, h, w); a copy: inputs may be read-only
    base = base_u8.float() / 255
    fields = MotionFields(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in (
        fields.velocity, fields.moving, fields.blend, fields.appearance)), kind=fields.kind)
    canvas_hw = tuple(fields.moving.shape[-2:])
    full_mask = None
    if mask is not None:
        m = torch.as_tensor(mask, device=device, dtype=torch.float32)[None, None].clamp(0, 1)
        fields = fields.masked(_resize_maps(m, canvas_hw))
        full_mask = _resize_maps(m, (h, w))
    moving = _resize_maps(fields.moving, (h, w)) > 0  # (1, 1, h, w)
    if full_mask is not None:
        moving &= full_mask > 0
    steps = num_frames - 1
    grid = pixel_grid(h, w, device=device)
    layer = moving_layer(base, moving.float())  # what the warp reads: still pixels filled from the moving ones
    if loop:
        velocity = fields.step_velocity()
        back = integrate(velocity, steps, backward=True)[:, 0]  # (steps, 2, hc, wc)
        fwd = integrate(velocity, steps, backward=False)[:, 0]
        weights = loop_weights(num_frames, device=device)
        fade = torch.sin(torch.pi * torch.arange(num_frames, device=device) / num_frames)
    else:
        offsets = fields.offsets(steps)[0]  # (steps, 2, hc, wc)
    per_chunk = max(1, chunk_pixels // (h * w))
    yield base_u8.permute(0, 2, 3, 1).cpu().numpy()
    for t0 in range(1, num_frames, per_chunk):
        ts = list(range(t0, min(num_frames, t0 + per_chunk)))
        k = len(ts)
        img = layer.expand(k, -1, -1, -1)
        if loop:
            a = sample_at(img, grid + _resize_offsets(back[[t - 1 for t in ts]], (h, w)))
            c = sample_at(img, grid + _resize_offsets(fwd[[num_frames - t - 1 for t in ts]], (h, w)))
            wt = weights[ts].view(k, 1, 1, 1)
            warped = wt * a + (1 - wt) * c
            gain = fade[ts].view(k, 1, 1, 1)
        else:
            warped = sample_at(img, grid + _resize_offsets(offsets[[t - 1 for t in ts]], (h, w)))
            gain = 1.0
        blend = _resize_maps(fields.blend[0, [t - 1 for t in ts]], (h, w)) * gain
        if full_mask is not None:
            blend = blend * full_mask
        appearance = _resize_maps(fields.appearance[0, [t - 1 for t in ts]], (h, w))
        out = _to_uint8(warped + blend * (appearance - warped))
        frames = torch.where(moving, out, base_u8)
        yield frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def read_ahead(chunks: Iterable[T], depth: int = 1) -> Iterator[T]:
    """`chunks`, produced `depth` items ahead in a background thread: the next chunk renders (torch releases the GIL)
    while the caller encodes this one (x264 releases it too), instead of the two taking turns. Same items, same
    order; an exception in the producer is raised here; stopping early stops the producer after its current item.
    Memory: `depth` more chunks held at once."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            items.put((done, exc))

    producer = threading.Thread(target=produce, name="vsyn-render-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, exc = items.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue, then let it finish its item
            try:
                items.get_nowait()
            except queue.Empty:
                pass
            producer.join(timeout=0.1)
