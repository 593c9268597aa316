"""Procedural landscape time-lapses with exact ground-truth motion.

A clip is a sky layer (periodic fractal clouds) advected by a known, steady, smooth shear flow over a static
hill silhouette, optionally with a lake band that mirrors the sky and shimmers. Because the flow is analytic, the
true per-frame displacement (``flow``) and the static region (``mask``) come for free: the embedded demo data, the
test fixture and the ground-truth benchmark for learned motion.

The velocity field is ``v(x, y) = (vx(y), vy)`` with ``vx(y) = a0 + sum_i a_i sin(k_i y + phi_i)`` and ``vy`` constant.
A point starting at ``(x0, y0)`` is at ``(x0 + (G(y0 + vy t) - G(y0)) / vy, y0 + vy t)`` at time ``t`` (``G`` is the
antiderivative of ``vx``), so frame ``t`` samples the texture at the inverted position, and the displacement of
pixel ``(x, y)`` from frame ``t`` to ``t + 1`` is ``((G(y + vy) - G(y)) / vy, vy)`` -- exact, not a finite difference.
Everything is vectorised numpy: a 64 px, 25-frame clip takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_SKY_LOW = np.array([0.36, 0.58, 0.86], np.float32)  # clear sky
_SKY_HIGH = np.array([0.97, 0.97, 0.99], np.float32)  # cloud tops
_CLOUD_SHADE = np.array([0.62, 0.64, 0.72], np.float32)  # cloud undersides
_GRASS = np.array([0.22, 0.42, 0.16], np.float32)
_ROCK = np.array([0.38, 0.33, 0.24], np.float32)
_WATER_TINT = np.array([0.55, 0.72, 0.85], np.float32)


def _fractal_tile(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Periodic (n, n) noise with a 1/f^beta spectrum, normalised to [0, 1]; periodic so advection can wrap."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    amp[f > 0.25] = 0.0  # no detail finer than 4 texels: keeps bilinear sampling (and flow warping) accurate
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    tile = np.fft.irfft2(spec, s=(n, n)).astype(np.float32)
    tile -= tile.min()
    return tile / max(float(tile.max()), 1e-8)


def _sample_periodic(tile: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic 2-D tile at float coordinates (any matching shapes)."""
    n = tile.shape[0]
    flat = tile.ravel()
    x0 = np.floor(x)
    y0 = np.floor(y)
    wx = x - x0
    wy = y - y0
    ix = x0.astype(np.int32) % n
    iy = y0.astype(np.int32) % n
    ix1 = ix + 1
    ix1[ix1 == n] = 0
    row0 = iy * n
    row1 = np.where(iy + 1 == n, 0, row0 + n)
    top = flat.take(row0 + ix) * (1 - wx) + flat.take(row0 + ix1) * wx
    bottom = flat.take(row1 + ix) * (1 - wx) + flat.take(row1 + ix1) * wx
    return top * (1 - wy) + bottom * wy


class _ShearFlow:
    """``vx(y) = a0 + sum a_i sin(k_i y + phi_i)``, ``vy`` constant, in pixels per frame."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        scale = size / 64.0
        self.a0 = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0) * scale
        self.a = rng.uniform(0.03, 0.12, 2) * scale
        self.k = rng.uniform(0.5, 1.5, 2) * 2 * np.pi / size
        self.phi = rng.uniform(0, 2 * np.pi, 2)
        self.vy = rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.25) * scale  # |vy| > 0: G-differences stay stable

    def _G(self, y: np.ndarray) -> np.ndarray:
        """Antiderivative of vx."""
        ky = self.k[None, :] * y[..., None] + self.phi[None, :]
        return self.a0 * y - (self.a / self.k * np.cos(ky)).sum(-1)

    def x_shift(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Horizontal distance travelled in ``t`` frames by the point that is at row ``y`` at time ``t``."""
        return (self._G(y) - self._G(y - self.vy * t)) / self.vy

    def step(self, y: np.ndarray) -> np.ndarray:
        """Horizontal displacement over one frame of the point at row ``y``."""
        return (self._G(y + self.vy) - self._G(y)) / self.vy


def _clouds(value: np.ndarray, threshold: float, levels: int = 1024) -> np.ndarray:
    """Map noise in [0, 1] to RGB sky with clouds where it exceeds ``threshold`` (through a lookup table: one
    gather instead of a dozen full-size temporaries)."""
    v = np.linspace(0.0, 1.0, levels, dtype=np.float32)
    c = np.clip((v - threshold) / 0.2, 0.0, 1.0)[:, None]
    c = c * c * (3 - 2 * c)  # smoothstep: soft cloud edges
    cloud = _CLOUD_SHADE + (_SKY_HIGH - _CLOUD_SHADE) * v[:, None]
    lut = _SKY_LOW * (1 - c) + cloud * c
    return lut[(value * (levels - 1) + 0.5).astype(np.int32)]


def make_clip(seed: int, size: int, frames: int, *, water: bool = True) -> dict[str, np.ndarray]:
    """One clip: ``video`` uint8 (T,H,W,3), ``flow`` float32 (T-1,2,H,W) in px/frame (dx, dy; 0 where static),
    ``mask`` uint8 (H,W) with 1 on the static ground. Deterministic in ``seed``."""
    if size < 8 or frames < 2:
        raise ValueError(f"need size >= 8 and frames >= 2, got size={size}, frames={frames}")
    rng = np.random.default_rng(seed)
    h = w = size
    ys = np.arange(h, dtype=np.float64)
    xs = np.arange(w, dtype=np.float64)

    # Static ground: a hill silhouette plus (optionally) a lake band along the bottom.
    horizon = h * rng.uniform(0.5, 0.7)
    for _ in range(3):
        horizon = horizon + h * rng.uniform(0.02, 0.08) * np.sin(
            xs * rng.uniform(1, 4) * 2 * np.pi / w + rng.uniform(0, 2 * np.pi)
        )
    ground = ys[:, None] >= horizon[None, :]
    water_top = int(h * rng.uniform(0.8, 0.88)) if water else h
    lake = np.zeros((h, w), bool)
    lake[water_top:] = True
    mask = ground & ~lake

    # Sky layer: clouds advected by the shear flow; the lake mirrors it about its top edge (dy reversed).
    flow_field = _ShearFlow(rng, size)
    tile_n = size  # one texture period spans the frame, so the cloud cover is what the threshold says
    tile = _fractal_tile(rng, tile_n, beta=rng.uniform(3.0, 3.8))
    threshold = float(np.quantile(tile, rng.uniform(0.3, 0.8)))  # 20-70 % cloud cover
    src_y = np.where(lake, 2 * water_top - 1 - ys[:, None], ys[:, None])[:, 0]  # sky row each image row shows
    t = np.arange(frames, dtype=np.float64)[:, None]
    # Texture coordinates in float32 (exact enough below 2^16 px) halve the cost of the lookup.
    shift = flow_field.x_shift(src_y[None, :], t).astype(np.float32)[:, :, None]
    tex_x = xs.astype(np.float32)[None, None, :] - shift  # (T, H, W)
    tex_y = np.broadcast_to((src_y[None, :] - flow_field.vy * t).astype(np.float32)[:, :, None], tex_x.shape)
    sky = _clouds(_sample_periodic(tile, tex_x, tex_y), threshold)  # (T, H, W, 3)

    if water:
        # Shimmer: brightness glints that flicker per frame; they change intensity, not the motion.
        glint = rng.random((frames, h - water_top, w), dtype=np.float32) ** 8
        sky[:, water_top:] = sky[:, water_top:] * _WATER_TINT * 0.8 + 0.25 * glint[..., None]

    detail = _fractal_tile(rng, tile_n, beta=1.6)[:h, :w, None]
    depth = np.clip((ys[:, None] - horizon[None, :]) / (h - horizon.min() + 1e-6), 0, 1)[..., None].astype(np.float32)
    ground_rgb = (_GRASS * (0.6 + 0.6 * depth) + (_ROCK - _GRASS) * detail) * (0.7 + 0.5 * detail)

    sky[:, mask] = ground_rgb[mask]
    video = (np.clip(sky, 0.0, 1.0, out=sky) * 255 + 0.5).astype(np.uint8)

    dx = np.where(lake, flow_field.step(src_y[:, None]), flow_field.step(ys[:, None])) * np.ones((1, w))
    dy = np.where(lake, -flow_field.vy, flow_field.vy) * np.ones((h, w))
    step = np.stack([dx, dy]).astype(np.float32) * ~mask[None]
    flow = np.broadcast_to(step, (frames - 1, 2, h, w)).copy()
    return {"video": video, "flow": flow, "mask": mask.astype(np.uint8)}


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip ``index`` of a dataset seeded with ``seed`` (distinct datasets never share clips)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generate_clips(n: int, size: int, frames: int, seed: int = 0, *, water: bool = True) -> Iterator[dict]:
    """``n`` clips from :func:`make_clip`, each dict carrying the ``seed`` that regenerates it."""
    for i in range(n):
        s = clip_seed(seed, i)
        yield {**make_clip(s, size, frames, water=water), "seed": s}
