"""Procedural landscape time-lapses with exact ground-truth motion.

A clip is layered: a sky whose clouds (and light gradient) are advected by a smooth velocity field, one to three
water bands each with its own current, and static land -- a sea horizon, rolling hills or a mountain ridge, an
optional shore -- with static foreground occluders (trees, rocks) in front of sky and water. Palettes (day, sunset,
overcast, dusk, dawn), horizons, cloud cover and speeds vary per clip; everything is a function of the seed.

Sky flows (one family per clip), all steady Eulerian velocity fields scaled by a per-clip speed and a slowly varying
rate ``a(t) = 1 + m sin(2 pi t / P + phi)`` (gusts; ``alpha(t) = int_0^t a`` in closed form), so the displacement
from frame t to t+1 varies per frame:
  drift, rotation about a far centre, divergence from (or convergence to) a vanishing point on the horizon, and
  mixed affine fields: ``v(p) = A p + u``. The flow map is the matrix exponential of the 3x3 homogeneous matrix
  ``M = [[A, u], [0, 0]]``: ``phi_s(p) = expm(M s) p`` -- exact (to float64 round-off), not a finite difference.
  shear: ``v(x, y) = (vx(y), vy)`` with ``vx(y) = a0 + sum_i a_i sin(k_i y + phi_i)``: the point at ``(x0, y0)``
  is at ``(x0 + (G(y0 + vy s) - G(y0)) / vy, y0 + vy s)`` after ``s`` (``G`` the antiderivative of vx) -- exact.
Water bands move uniformly (their own velocity and rate), so their displacement is exact too.
Frame t samples each layer's texture at the point its pixel came from (the inverse flow map), and the stored flow of
frame t is ``phi_{alpha(t+1) - alpha(t)}(p) - p`` at frame t's pixel positions (forward, px/frame, dx then dy,
docs/contracts.md); static pixels have flow 0 and mask 1. Every texture is band-limited (no detail finer than 4
texels) so that bilinear warping by the true flow reproduces the next frame; the occluders' edges are hard (a pixel
is static or not). Moving content passes behind occluders and across layer borders: there, and only there, the next
frame shows something the flow cannot bring (``regions`` tells the layers apart).
Everything is vectorised numpy: a 64 px, 25-frame clip takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

GENERATOR = "procedural-v2"  # recorded in every packed clip's metadata
TEST_RANGE = 1 << 62  # held-out test scenes use seeds in [2^62, 2^63), training/val scenes seeds in [0, 2^62)
SPLIT_SEED_RANGES = ("train", "test")
SKY_FLOWS = ("drift", "shear", "rotation", "divergence", "affine")
HORIZONS = ("sea", "hills", "mountains")

# name -> colours (RGB in [0, 1]): sky top, sky at the horizon, cloud tops, cloud undersides, land near, land far,
# rock, water dark, water light, tree crown, trunk
_PALETTES: dict[str, dict[str, tuple[float, float, float]]] = {
    "day": dict(top=(0.25, 0.48, 0.85), horizon=(0.70, 0.82, 0.95), cloud=(0.98, 0.98, 1.00),
                shade=(0.62, 0.65, 0.74), land=(0.24, 0.44, 0.17), far=(0.36, 0.46, 0.50), rock=(0.45, 0.42, 0.38),
                water_dark=(0.10, 0.28, 0.42), water_light=(0.55, 0.75, 0.88), crown=(0.10, 0.30, 0.10),
                trunk=(0.30, 0.22, 0.14)),
    "sunset": dict(top=(0.22, 0.20, 0.45), horizon=(0.98, 0.62, 0.32), cloud=(1.00, 0.78, 0.60),
                   shade=(0.55, 0.32, 0.40), land=(0.20, 0.16, 0.14), far=(0.38, 0.26, 0.32),
                   rock=(0.28, 0.22, 0.22), water_dark=(0.18, 0.12, 0.22), water_light=(0.95, 0.60, 0.40),
                   crown=(0.08, 0.07, 0.09), trunk=(0.10, 0.08, 0.08)),
    "overcast": dict(top=(0.55, 0.58, 0.62), horizon=(0.78, 0.80, 0.82), cloud=(0.90, 0.90, 0.92),
                     shade=(0.45, 0.47, 0.52), land=(0.30, 0.38, 0.25), far=(0.50, 0.54, 0.56),
                     rock=(0.40, 0.40, 0.40), water_dark=(0.25, 0.30, 0.33), water_light=(0.62, 0.66, 0.70),
                     crown=(0.16, 0.24, 0.15), trunk=(0.25, 0.22, 0.18)),
    "dusk": dict(top=(0.08, 0.10, 0.28), horizon=(0.45, 0.35, 0.60), cloud=(0.60, 0.52, 0.72),
                 shade=(0.20, 0.18, 0.32), land=(0.10, 0.12, 0.14), far=(0.22, 0.20, 0.32), rock=(0.18, 0.18, 0.22),
                 water_dark=(0.05, 0.07, 0.18), water_light=(0.40, 0.35, 0.58), crown=(0.04, 0.06, 0.06),
                 trunk=(0.06, 0.05, 0.05)),
    "dawn": dict(top=(0.45, 0.58, 0.85), horizon=(0.98, 0.85, 0.70), cloud=(1.00, 0.92, 0.88),
                 shade=(0.70, 0.60, 0.68), land=(0.35, 0.42, 0.22), far=(0.55, 0.55, 0.62), rock=(0.50, 0.45, 0.42),
                 water_dark=(0.30, 0.38, 0.55), water_light=(0.92, 0.85, 0.82), crown=(0.16, 0.26, 0.12),
                 trunk=(0.32, 0.24, 0.18)),
}
PALETTES = tuple(_PALETTES)


def _fractal_tile(rng: np.random.Generator, n: int, beta: float, cutoff: float = 0.25) -> np.ndarray:
    """Periodic (n, n) noise with a 1/f^beta spectrum, normalised to [0, 1]; periodic so advection can wrap.
    No frequency above `cutoff` cycles/texel: bilinear sampling (and warping by the flow) stays accurate."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    amp[f > cutoff] = 0.0
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    tile = np.fft.irfft2(spec, s=(n, n)).astype(np.float32)
    tile -= tile.min()
    return tile / max(float(tile.max()), 1e-8)


def _sample_periodic(tile: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic 2-D tile at float32 coordinates (any matching shapes), in float32."""
    n = tile.shape[0]
    flat = np.pad(tile, ((0, 1), (0, 1)), mode="wrap").ravel()  # the +1 neighbours never wrap
    x0 = np.floor(x)
    y0 = np.floor(y)
    wx = x - x0
    wy = y - y0
    i = (y0.astype(np.int32) % n) * (n + 1) + x0.astype(np.int32) % n
    top = flat.take(i)
    top += (flat.take(i + 1) - top) * wx
    bottom = flat.take(i + n + 1)
    bottom += (flat.take(i + n + 2) - bottom) * wx
    return top + (bottom - top) * wy


def _time_warp(rng: np.random.Generator, frames: int, max_mod: float) -> np.ndarray:
    """alpha(t) = int_0^t (1 + m sin(2 pi s / P + phi)) ds at t = 0..frames-1, exactly: the flow's clock."""
    m = rng.uniform(0.0, max_mod)
    period = rng.uniform(8.0, 40.0)
    phi = rng.uniform(0, 2 * np.pi)
    t = np.arange(frames, dtype=np.float64)
    return t + m * period / (2 * np.pi) * (np.cos(phi) - np.cos(2 * np.pi * t / period + phi))


def _expm(x: np.ndarray) -> np.ndarray:
    """Matrix exponentials of a stack (S, n, n) of small matrices: scaling and squaring of an order-16 Taylor
    series in float64, accurate to ~1e-15 relative here (scipy's expm costs milliseconds per 3x3 call)."""
    norm = float(np.abs(x).sum(axis=-2).max()) if x.size else 0.0
    squarings = int(np.ceil(np.log2(norm / 0.25))) if norm > 0.25 else 0
    y = x / 2.0**squarings
    out = np.broadcast_to(np.eye(x.shape[-1]), x.shape).copy()
    term = out.copy()
    for k in range(1, 17):
        term = term @ y / k
        out += term
    for _ in range(squarings):
        out = out @ out
    return out


class _AffineFlow:
    """v(p) = A p + u; the flow map phi_s = expm(M s), M = [[A, u], [0, 0]] (homogeneous coordinates)."""

    def __init__(self, a: np.ndarray, u: np.ndarray) -> None:
        self.m = np.zeros((3, 3))
        self.m[:2, :2] = a
        self.m[:2, 2] = u

    @staticmethod
    def _apply(mats: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S, 3, 3) maps applied to the points (x[j], y[i]) -> two (S, len(y), len(x)) arrays."""
        m = mats[:, :2, :, None, None]
        return (m[:, 0, 0] * x + m[:, 0, 1] * y[:, None] + m[:, 0, 2],
                m[:, 1, 0] * x + m[:, 1, 1] * y[:, None] + m[:, 1, 2])

    def source(self, x: np.ndarray, y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the point at (x[j], y[i]) after each time s started: phi_{-s}; (S, len(y), len(x)) each."""
        return self._apply(_expm(-self.m * times[:, None, None]), x, y)

    def step(self, x: np.ndarray, y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Displacement phi_s(p) - p over each time s of the point p = (x[j], y[i])."""
        nx, ny = self._apply(_expm(self.m * times[:, None, None]), x, y)
        return nx - x, ny - y[:, None]


class _ShearFlow:
    """vx(y) = a0 + sum a_i sin(k_i y + phi_i), vy constant (|vy| > 0 keeps the G-differences stable)."""

    def __init__(self, rng: np.random.Generator, size: int, speed: float) -> None:
        self.a0 = rng.choice([-1.0, 1.0]) * speed
        self.a = rng.uniform(0.1, 0.35, 2) * speed
        self.k = rng.uniform(0.5, 1.5, 2) * 2 * np.pi / size
        self.phi = rng.uniform(0, 2 * np.pi, 2)
        self.vy = rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.3) * speed

    def _g(self, y: np.ndarray) -> np.ndarray:
        """Antiderivative of vx."""
        ky = self.k * y[..., None] + self.phi
        return self.a0 * y - (self.a / self.k * np.cos(ky)).sum(-1)

    def source(self, x: np.ndarray, y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y0 = y[None, :] - self.vy * times[:, None]  # (S, rows): the shift depends on the row only
        shift = (self._g(y)[None, :] - self._g(y0)) / self.vy
        return x - shift[:, :, None], np.broadcast_to(y0[:, :, None], (len(times), len(y), len(x)))

    def step(self, x: np.ndarray, y: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx = (self._g(y[None, :] + self.vy * times[:, None]) - self._g(y)[None, :]) / self.vy
        shape = (len(times), len(y), len(x))
        return np.broadcast_to(dx[:, :, None], shape), np.broadcast_to((self.vy * times)[:, None, None], shape)


def _sky_flow(rng: np.random.Generator, kind: str, size: int, speed: float, horizon_y: float):
    """One sky velocity field of the given family; `speed` is about the px/frame at the middle of the sky."""
    centre = np.array([size / 2, horizon_y / 2])
    if kind == "shear":
        return _ShearFlow(rng, size, speed)
    if kind == "drift":
        angle = rng.uniform(-0.35, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
        return _AffineFlow(np.zeros((2, 2)), speed * np.array([np.cos(angle), np.sin(angle)]))
    if kind == "rotation":  # about a centre well outside the frame: curved drift with a speed gradient
        angle = rng.uniform(-np.pi, 0)  # mostly above the frame
        radius = size * rng.uniform(1.2, 3.0)
        c = centre + radius * np.array([np.cos(angle), np.sin(angle)])
        omega = rng.choice([-1.0, 1.0]) * speed / radius
        a = omega * np.array([[0.0, -1.0], [1.0, 0.0]])
        return _AffineFlow(a, -a @ c)
    if kind == "divergence":  # clouds stream out of (or into) a vanishing point on the horizon
        c = np.array([size * rng.uniform(0.25, 0.75), horizon_y])
        reach = np.hypot(max(c[0], size - c[0]), c[1]) * 0.7
        k = rng.choice([1.0, -0.4]) * speed / reach  # converging more slowly: it compresses the texture
        a = k * np.eye(2) + rng.uniform(-0.3, 0.3) * abs(k) * np.array([[0.0, -1.0], [1.0, 0.0]])
        return _AffineFlow(a, -a @ c)
    # affine: a random mix of drift, shear, rotation and divergence, speed about `speed` at the sky's centre
    a = rng.uniform(-0.5, 0.5, (2, 2)) * speed / size  # mild: a converging field compresses the texture
    angle = rng.uniform(0, 2 * np.pi)
    return _AffineFlow(a, speed * np.array([np.cos(angle), np.sin(angle)]) - a @ centre)


def _horizon(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """Row of the land's top edge per column (float)."""
    xs = np.arange(w, dtype=np.float64)
    base = h * rng.uniform(0.45, 0.65)
    if kind == "sea":
        return np.full(w, base)
    if kind == "hills":
        y = np.full(w, base)
        for _ in range(3):
            y += h * rng.uniform(0.02, 0.07) * np.sin(xs * rng.uniform(1, 4) * 2 * np.pi / w + rng.uniform(0, 2 * np.pi))
        return y
    # mountains: a random walk ridge, smoothed a little, with a few peaks
    steps = rng.standard_normal(w) * h * 0.035
    ridge = np.cumsum(steps)
    ridge -= np.linspace(ridge[0], ridge[-1], w)  # no drift across the frame
    kernel = np.ones(3) / 3
    ridge = np.convolve(np.pad(ridge, 1, mode="edge"), kernel, mode="valid")
    for _ in range(rng.integers(1, 3)):
        px, width = rng.uniform(0, w), w * rng.uniform(0.1, 0.3)
        ridge -= h * rng.uniform(0.08, 0.2) * np.exp(-0.5 * ((xs - px) / width) ** 2)
    return base - h * 0.05 + ridge


def _occluders(rng: np.random.Generator, h: int, w: int, palette: dict, detail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Static trees and rocks in front of everything: (mask (H, W) bool, colour (H, W, 3))."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros((h, w), bool)
    rgb = np.zeros((h, w, 3), np.float32)
    for _ in range(int(rng.integers(0, 4))):  # trees
        x0 = rng.uniform(0, w)
        base = h * rng.uniform(0.85, 1.05)
        height = h * rng.uniform(0.25, 0.6)
        half = max(0.6, w * rng.uniform(0.008, 0.02))
        trunk = (np.abs(xs - x0) <= half) & (ys <= base) & (ys >= base - height)
        crown = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(3, 7))):
            cx = x0 + rng.normal(0, height * 0.12)
            cy = base - height + rng.uniform(-0.1, 0.35) * height
            r = height * rng.uniform(0.1, 0.22)
            crown |= (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        shade = 0.7 + 0.6 * detail
        rgb[crown] = (np.array(palette["crown"]) * shade[crown, None])
        rgb[trunk & ~crown] = palette["trunk"]
        mask |= trunk | crown
    for _ in range(int(rng.integers(0, 4))):  # rocks resting low in the frame
        cx, cy = rng.uniform(0, w), h * rng.uniform(0.8, 1.02)
        rx, ry = w * rng.uniform(0.04, 0.12), h * rng.uniform(0.03, 0.08)
        rock = (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1) & (ys <= cy + ry * 0.3)
        rock &= ~mask
        shade = 0.55 + 0.7 * detail + 0.3 * np.clip((cy - ys) / ry, 0, 1)
        rgb[rock] = np.array(palette["rock"]) * shade[rock, None]
        mask |= rock
    return mask, rgb


def make_clip(seed: int, size: int, frames: int, *, water: bool | None = None) -> dict[str, np.ndarray]:
    """One clip: ``video`` uint8 (T,H,W,3); ``flow`` float32 (T-1,2,H,W) px/frame (dx, dy; 0 where static);
    ``mask`` uint8 (H,W), 1 = static; ``regions`` uint8 (H,W): 0 static, 1 sky, 2.. water bands (for tests and
    analysis; not packed); ``scene``: what was drawn (palette, horizon, sky flow family, speed). Deterministic in ``seed``; ``water`` forces a water band on or off (None: the seed
    decides)."""
    if size < 8 or frames < 2:
        raise ValueError(f"need size >= 8 and frames >= 2, got size={size}, frames={frames}")
    rng = np.random.default_rng(seed)
    h = w = size
    scale = size / 64.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    palette_name = PALETTES[rng.integers(len(PALETTES))]
    palette = {k: np.array(v, np.float32) for k, v in _PALETTES[palette_name].items()}

    # ---- layout: horizon, land, water bands, occluders
    has_water = bool(rng.random() < 0.7) if water is None else water
    kind = HORIZONS[rng.integers(len(HORIZONS))]
    if kind == "sea" and not has_water:
        kind = "hills"
    horizon = _horizon(rng, kind, h, w)
    sky = ys < horizon[None, :]
    if has_water:
        water_top = int(np.ceil(horizon.max() if kind == "sea" else min(h - 3, horizon.max() + h * rng.uniform(0.05, 0.2))))
        water_top = min(water_top, h - 2)
    else:
        water_top = h
    land = ~sky
    water_rows = ys >= water_top
    shore = np.zeros((h, w), bool)
    if has_water and (kind == "sea" or rng.random() < 0.4):  # a foreground shore (always at sea: some still ground)
        edge = h - h * rng.uniform(0.04, 0.12) + h * 0.03 * np.sin(xs[0] * 2 * np.pi / w * rng.uniform(1, 3)
                                                                    + rng.uniform(0, 2 * np.pi))
        shore = ys >= edge[None, :]
    water_px = water_rows & ~shore
    land = land & ~water_px
    detail = _fractal_tile(rng, size, beta=1.6)
    occluded, occluder_rgb = _occluders(rng, h, w, palette, detail)
    static = land | occluded
    regions = np.where(static, 0, np.where(sky, 1, 0)).astype(np.uint8)

    # ---- sky: clouds and light advected by the sky flow
    speed = rng.uniform(0.4, 2.0) * scale  # px/frame, varies per clip
    flow_kind = SKY_FLOWS[rng.integers(len(SKY_FLOWS))]
    horizon_y = float(horizon.mean())
    sky_flow = _sky_flow(rng, flow_kind, size, speed, horizon_y)
    alpha = _time_warp(rng, frames, 0.4)
    tile_n = 2 * size  # a period of two frame widths: no visible repeat as the texture moves
    clouds = _fractal_tile(rng, tile_n, beta=rng.uniform(3.0, 3.8), cutoff=0.2)
    cover = rng.uniform(0.25, 0.8)
    rank = int((1 - cover) * (clouds.size - 1))
    threshold = float(np.partition(clouds.ravel(), rank)[rank])  # cloud cover = the share above it
    softness = rng.uniform(0.15, 0.3)
    video = np.empty((frames, h, w, 3), np.float32)
    flow = np.zeros((frames - 1, 2, h, w), np.float32)
    rows = np.nonzero(sky.any(axis=1))[0]
    n_sky = int(rows[-1]) + 1 if len(rows) else 0  # the sky's rows: no work below the highest land
    x = np.arange(w, dtype=np.float64)
    y = np.arange(n_sky, dtype=np.float64)
    tx, ty = sky_flow.source(x, y, alpha)  # (T, rows, W) each
    v = _sample_periodic(clouds, tx.astype(np.float32), ty.astype(np.float32))
    c = np.clip((v - threshold) * (1 / softness), 0.0, 1.0)
    c *= c * (3 - 2 * c)  # smoothstep: soft cloud edges
    g = np.clip(ty.astype(np.float32) * (1 / max(horizon_y, 1.0)), 0.0, 1.0)
    # background + (cloud - background) * c, with background = top + (horizon - top) * g and cloud = shade +
    # (cloud - shade) * v: linear in (1, g (1 - c), c, v c), so one small matrix product colours every pixel
    top = palette["top"]
    colours = np.stack([top, palette["horizon"] - top, palette["shade"] - top, palette["cloud"] - palette["shade"]])
    video[:, :n_sky] = np.stack([np.ones_like(c), g * (1 - c), c, v * c], axis=-1) @ colours
    dx, dy = sky_flow.step(x, y, np.diff(alpha))
    flow[:, 0, :n_sky], flow[:, 1, :n_sky] = dx, dy

    # ---- water: bands, each with its own current, advecting a horizontally stretched ripple texture
    if water_top < h:
        ripple = _fractal_tile(rng, tile_n, beta=rng.uniform(2.0, 3.0), cutoff=0.2)
        n_bands = int(rng.integers(1, 4))
        edges = np.linspace(water_top, h, n_bands + 1)
        edges[1:-1] += rng.uniform(-0.15, 0.15, n_bands - 1) * (h - water_top) / n_bands
        edges = np.round(edges).astype(int)
        clock = _time_warp(rng, frames, 0.3)
        stretch = rng.uniform(2.0, 4.0)  # ripples are wider than tall
        w_speed = speed * rng.uniform(0.4, 1.2)
        direction = rng.choice([-1.0, 1.0])
        for j in range(n_bands):
            lo, hi = int(edges[j]), int(edges[j + 1])
            if hi <= lo:
                continue
            depth = (j + 1) / n_bands  # nearer bands (lower in the frame) move faster on screen
            ux = direction * w_speed * (0.4 + 0.6 * depth) * rng.uniform(0.7, 1.3) * (1 if rng.random() < 0.8 else -1)
            uy = w_speed * rng.uniform(0.0, 0.15)  # a little toward the viewer
            band_px = water_px[lo:hi] & ~static[lo:hi]
            regions[lo:hi][band_px] = 2 + j
            tx = ((x[None, None, :] - ux * clock[:, None, None]) / stretch + 37.0 * j).astype(np.float32)
            ty = (np.arange(lo, hi)[None, :, None] - uy * clock[:, None, None] + 11.0 * j).astype(np.float32)
            r = _sample_periodic(ripple, np.broadcast_to(tx, (frames, hi - lo, w)),
                                 np.broadcast_to(ty, (frames, hi - lo, w)))[..., None]
            band = palette["water_dark"] + (palette["water_light"] - palette["water_dark"]) * r
            np.copyto(video[:, lo:hi], band, where=band_px[:, :, None])
            step = np.diff(clock)[:, None]
            flow[:, 0, lo:hi][:, band_px] = ux * step
            flow[:, 1, lo:hi][:, band_px] = uy * step

    # ---- static land and occluders on top
    far = np.clip((ys - horizon[None, :]) / (h * 0.4), 0, 1)[..., None].astype(np.float32)
    land_rgb = (palette["far"] + (palette["land"] - palette["far"]) * far) * (0.75 + 0.5 * detail[..., None])
    static_rgb = np.where(occluded[..., None], occluder_rgb, land_rgb)
    np.copyto(video, static_rgb, where=static[:, :, None])
    out = (np.clip(video, 0.0, 1.0, out=video) * 255 + 0.5).astype(np.uint8)

    flow *= ~static
    scene = {"generator": GENERATOR, "palette": palette_name, "horizon": kind, "sky_flow": flow_kind,
             "speed_px": round(float(speed), 4), "water_bands": int(regions.max()) - 1 if water_top < h else 0,
             "occluders": bool(occluded.any())}
    return {"video": out, "flow": flow, "mask": static.astype(np.uint8), "regions": regions, "scene": scene}


def clip_seed(seed: int, index: int, split: str = "train") -> int:
    """The seed of clip ``index`` of a dataset seeded with ``seed``: distinct datasets never share clips, and the
    held-out ``test`` scenes come from their own seed range ([2^62, 2^63); training and val scenes: [0, 2^62))."""
    if split not in SPLIT_SEED_RANGES:
        raise ValueError(f"split must be one of {SPLIT_SEED_RANGES}, not {split!r}")
    state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(2)) + (TEST_RANGE if split == "test" else 0)


def generate_clips(n: int, size: int, frames: int, seed: int = 0, *, water: bool | None = None,
                   split: str = "train") -> Iterator[dict]:
    """``n`` clips from :func:`make_clip`, each dict carrying the ``seed`` that regenerates it."""
    for i in range(n):
        s = clip_seed(seed, i, split)
        yield {**make_clip(s, size, frames, water=water), "seed": s}
