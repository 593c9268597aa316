"""Image-to-video generators: the style-modulated recurrent generator (method.md §1) and DVD-GAN-S (§2).

Both take an image (B, 3, H, W) in [0, 1] and return a video (B, T, 3, H, W) in [0, 1] whose frame 0 is the image
itself. Each pyramid level runs one ConvGRU over time, seeded with the encoder feature at that level; every frame of
a level is then decoded in one batched pass (B·T' frames), so only the GRU recurrence loops over time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vsyn.config import ModelConfig
from vsyn.nn.layers import BNResBlock, ConvGRU, DownBlock, StyledConv, ToRGB
from vsyn.nn.motion import FIELD_KINDS, HEAD_CHANNELS, MotionFields, compose, decode_head, moving_mask
from vsyn.nn.motion_encoder import MotionEncoder, reparameterise

HEADS = ("pixels", "motion")
GRU_SEEDS = ("features", "tanh")

# Channel multipliers per decoder level (coarse to fine); a generator of `depth` levels keeps the last depth+1.
CH_MULT = (8, 8, 8, 8, 8, 8, 4, 2, 1)


def pyramid_depth(resolution: int, start_fp: int, max_fp: int) -> int:
    """Number of GRU levels: min(max_fp, log2(resolution) − start_fp) (the original's sizing rule, §1.2)."""
    log_res = int(math.log2(resolution))
    assert 2**log_res == resolution, f"resolution must be a power of two, not {resolution}"
    return min(max_fp, log_res - start_fp)


def _check_image(image: Tensor, resolution: int) -> None:
    assert image.ndim == 4 and image.shape[1:] == (3, resolution, resolution), (
        f"image must be (B, 3, {resolution}, {resolution}), got {tuple(image.shape)}"
    )


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """N(0,1) drawn on the generator's own device, then moved: a CPU-seeded draw is the same for any model device."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


class Encoder(nn.Module):
    """SN stem conv, then one down ResBlock per level. Returns the pyramid coarse → fine (index 0 = coarsest)."""

    def __init__(self, widths: list[int], *, sn_blocks: bool):
        """`widths`: channels fine → coarse, widths[0] being the stem's output."""
        super().__init__()
        self.stem = spectral_norm(nn.Conv2d(3, widths[0], 3, padding=1))
        self.blocks = nn.ModuleList(DownBlock(a, b, sn=sn_blocks) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        h, feats = self.stem(x), []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return feats[::-1]


class StyleRNNGenerator(nn.Module):
    """The proposed generator (`style2`): encoder pyramid, per-level ConvGRUs seeded by the encoder features, a learned
    constant as the coarsest GRU input, StyleGAN2 modulated convs driven by one style vector predicted from the image.

    Beyond the original: `latent_noise=True` adds a per-video z (noise_dim) mapped linearly onto the constant input,
    so one image can have several futures; with it off the network is the original's, parameter for parameter.
    Trained, the encoder maps grow large (the motion head at 64 px, 40 kimg: coarsest map RMS 0.095 at init, 821
    after, over 64 held-out scenes), the ConvGRU gates saturate, and a z entering only through the coarsest GRU's
    input changes nothing downstream (the fields of 8 latents differ by 1e-5 of their RMS; bench/latent_use.py).
    Two options give the noise a way through:
    `noise_to_style=True` adds a linear map of z to the style logits before the sigmoid, so z modulates every
    styled conv and the head directly; `gru_seed="tanh"` seeds each GRU with tanh(encoder map), the range its
    state keeps anyway (h' = (1−z)·h + z·tanh(·)), so the input can move it.
    `head="motion"` reads motion fields instead of RGB from the last layer and warps the input (vsyn.nn.motion);
    `head="pixels"` (default) is the original's ToRGB + tanh.
    `motion_encoder=True` adds the module that reads z off a real clip for reconstruction training
    (vsyn.nn.motion_encoder); a forward given `encode=clip` replaces its first rows of z by the clip's posterior
    sample, with `noise` as the reparameterisation's ε. Inference never uses it.
    """

    def __init__(
        self,
        resolution: int = 128,
        ch: int = 32,
        frames: int = 25,
        start_fp: int = 2,
        max_fp: int = 5,
        style_dim: int = 256,
        latent_noise: bool = False,
        noise_dim: int = 64,
        noise_to_style: bool = False,
        gru_seed: str = "features",
        head: str = "pixels",
        motion_field: str = "eulerian",
        max_speed: float = 2.0,
        motion_encoder: bool = False,
    ):
        super().__init__()
        if head not in HEADS or motion_field not in FIELD_KINDS:
            raise ValueError(f"head must be one of {HEADS} and motion_field one of {FIELD_KINDS}")
        if gru_seed not in GRU_SEEDS:
            raise ValueError(f"gru_seed must be one of {GRU_SEEDS}, not {gru_seed!r}")
        if noise_to_style and not latent_noise:
            raise ValueError("noise_to_style needs latent_noise")
        if motion_encoder and not latent_noise:
            raise ValueError("motion_encoder needs latent_noise")
        self.gru_seed = gru_seed
        self.resolution, self.frames, self.style_dim = resolution, frames, style_dim
        self.head, self.motion_field, self.max_speed = head, motion_field, float(max_speed)
        self.last_fields: MotionFields | None = None  # the latest forward's fields (training regularisers read them)
        self.last_posterior: tuple[Tensor, Tensor] | None = None  # (μ, log σ²) of the latest `encode=` forward
        self.depth = pyramid_depth(resolution, start_fp, max_fp)
        self.latent = resolution >> self.depth
        if self.depth < 1 or self.latent < 4:
            raise ValueError(f"start_fp={start_fp}, max_fp={max_fp} give depth {self.depth}, latent {self.latent}")
        widths = [m * ch for m in CH_MULT[-(self.depth + 1) :]]  # coarse → fine, widths[depth] == ch
        self.encoder = Encoder(widths[::-1], sn_blocks=False)
        top = widths[0]
        side = self.latent // 4
        self.style_head = nn.Sequential(
            DownBlock(top, top),
            DownBlock(top, 4 * ch),
            nn.Flatten(),
            nn.Linear(4 * ch * side * side, style_dim),
            nn.Sigmoid(),
        )
        self.const = nn.Parameter(torch.randn(top, self.latent, self.latent))
        self.noise_dim = noise_dim if latent_noise else 0
        self.noise_proj = nn.Linear(noise_dim, top * self.latent**2) if latent_noise else None
        self.noise_style = nn.Linear(noise_dim, style_dim) if noise_to_style else None
        self.grus = nn.ModuleList(ConvGRU(w, w) for w in widths[:-1])
        self.up_convs = nn.ModuleList(StyledConv(w, w, style_dim, up=True) for w in widths[:-1])
        self.convs = nn.ModuleList(StyledConv(a, b, style_dim) for a, b in zip(widths[:-1], widths[1:]))
        if head == "pixels":
            self.to_rgb = ToRGB(ch, style_dim)
        else:
            self.to_motion = ToRGB(ch, style_dim, out_ch=HEAD_CHANNELS)
        self.motion_encoder = MotionEncoder(resolution, frames, noise_dim, ch) if motion_encoder else None

    def sample_noise(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor | None:
        """Per-video latent z (B, noise_dim), or None when built without latent noise."""
        if self.noise_proj is None:
            return None
        return _randn((batch, self.noise_dim), generator, device)

    def forward(
        self, image: Tensor, num_frames: int | None = None, noise: Tensor | None = None, encode: Tensor | None = None
    ) -> Tensor:
        """image (B, 3, H, W) in [0,1] -> video (B, T, 3, H, W) in [0,1], T = num_frames or `frames`.
        `encode`: real clips (R ≤ B, T, 3, H, W) whose posterior z replaces the first R rows of `noise`."""
        _check_image(image, self.resolution)
        steps = (num_frames or self.frames) - 1
        assert steps >= 1, "num_frames must be >= 2"
        if encode is not None:
            noise = self._encode(encode, noise)
        if self.head == "motion":
            fields = self.motion_fields(image, num_frames, noise)
            training = self.training and torch.is_grad_enabled()
            self.last_fields = fields if training else None  # for the loss's field regularisers (G step only)
            mask = moving_mask(fields.moving, straight_through=training)
            frames = compose(image, fields.offsets(), fields.blend, fields.appearance, mask)
            return torch.cat([image[:, None], frames.to(image.dtype)], dim=1)
        x, style = self._decode(image, steps, noise)
        rgb = torch.tanh(self.to_rgb(x.flatten(0, 1), style)).reshape(image.shape[0], steps, 3, *image.shape[-2:])
        # Concatenating the image itself (not (2x−1+1)/2) keeps frame 0 bit-exact.
        return torch.cat([image[:, None], (rgb + 1) / 2], dim=1)

    def _encode(self, clips: Tensor, noise: Tensor | None) -> Tensor:
        """z for a batch whose first R videos are `clips`: their posterior samples (ε = those rows of `noise`), then
        the rest of `noise` unchanged."""
        assert self.motion_encoder is not None, "encode= needs a generator built with motion_encoder=True"
        assert noise is not None and noise.shape[0] >= clips.shape[0], "encode= needs noise for at least R videos"
        r = clips.shape[0]
        mu, logvar = self.motion_encoder(clips)
        self.last_posterior = (mu, logvar)
        return torch.cat([reparameterise(mu, logvar, noise[:r]).to(noise.dtype), noise[r:]])

    def motion_fields(self, image: Tensor, num_frames: int | None = None, noise: Tensor | None = None) -> MotionFields:
        """The motion head's fields for frames 1..T−1 at model resolution (vsyn.nn.motion)."""
        assert self.head == "motion", "motion_fields needs head='motion'"
        _check_image(image, self.resolution)
        steps = (num_frames or self.frames) - 1
        assert steps >= 1, "num_frames must be >= 2"
        x, style = self._decode(image, steps, noise)
        raw = self.to_motion(x.flatten(0, 1), style).reshape(image.shape[0], steps, HEAD_CHANNELS, *image.shape[-2:])
        return decode_head(raw, self.motion_field, self.max_speed)

    def _decode(self, image: Tensor, steps: int, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Encoder, style and the recurrent decoder: (last level's maps (B, T', ch, H, W), style (B, style_dim))."""
        b = image.shape[0]
        feats = self.encoder(image * 2 - 1)
        seeds = [torch.tanh(f) for f in feats] if self.gru_seed == "tanh" else feats  # the style reads feats[0]
        x = self.const.expand(b, 1, *self.const.shape)  # (B, 1, C0, l, l): the same input at every step
        if self.noise_proj is not None:
            if noise is None:
                noise = self.sample_noise(b, device=image.device)
            assert noise.shape == (b, self.noise_dim), noise.shape
            x = x + self.noise_proj(noise).reshape(b, 1, *self.const.shape)
        if self.noise_style is None:
            style = self.style_head(feats[0])  # (B, style_dim)
        else:  # the last module is the sigmoid: shift its input
            style = self.style_head[-1](self.style_head[:-1](feats[0]) + self.noise_style(noise))
        for gru, up_conv, conv, h0 in zip(self.grus, self.up_convs, self.convs, seeds):
            h = gru(x, h0, steps)  # (B, T', C, r, r)
            y = conv(up_conv(h.flatten(0, 1), style), style)  # all B·T' frames at once
            x = y.reshape(b, steps, *y.shape[1:])
        return x, style


class DVDGANGenerator(nn.Module):
    """DVD-GAN-S baseline: 4 levels whatever the resolution (coarsest grid res/16), SN everywhere, BatchNorm residual
    decoder, and Gaussian noise as the coarsest GRU input (the same tensor at every step)."""

    LEVELS = 4

    def __init__(self, resolution: int = 128, ch: int = 32, frames: int = 25):
        super().__init__()
        self.resolution, self.frames = resolution, frames
        self.latent = resolution // 2**self.LEVELS
        widths = [8 * ch, 8 * ch, 4 * ch, 2 * ch, ch]  # coarse → fine
        self.encoder = Encoder(widths[::-1], sn_blocks=True)
        self.grus = nn.ModuleList(ConvGRU(w, w, gate_gain=0.02) for w in widths[:-1])
        self.up_blocks = nn.ModuleList(BNResBlock(w, w, up=True) for w in widths[:-1])
        self.blocks = nn.ModuleList(BNResBlock(a, b, up=False) for a, b in zip(widths[:-1], widths[1:]))
        self.to_rgb = spectral_norm(nn.Conv2d(ch, 3, 3, padding=1))
        self.noise_shape = (widths[0], self.latent, self.latent)

    def sample_noise(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """The coarsest GRU input, N(0,1) of shape (B, 8ch, res/16, res/16)."""
        return _randn((batch, *self.noise_shape), generator, device)

    def forward(self, image: Tensor, num_frames: int | None = None, noise: Tensor | None = None) -> Tensor:
        """image (B, 3, H, W) in [0,1] -> video (B, T, 3, H, W) in [0,1], T = num_frames or `frames`."""
        _check_image(image, self.resolution)
        steps = (num_frames or self.frames) - 1
        assert steps >= 1, "num_frames must be >= 2"
        b = image.shape[0]
        feats = self.encoder(image * 2 - 1)
        if noise is None:
            noise = self.sample_noise(b, device=image.device)
        assert noise.shape == (b, *self.noise_shape), noise.shape
        x = noise[:, None]
        for gru, up_block, block, h0 in zip(self.grus, self.up_blocks, self.blocks, feats):
            y = block(up_block(gru(x, h0, steps).flatten(0, 1)))
            x = y.reshape(b, steps, *y.shape[1:])
        rgb = torch.tanh(self.to_rgb(F.relu(x.flatten(0, 1)))).reshape(b, steps, 3, *image.shape[-2:])
        return torch.cat([image[:, None], (rgb + 1) / 2], dim=1)


def build_generator(model_cfg: ModelConfig) -> StyleRNNGenerator | DVDGANGenerator:
    """The generator a `vsyn.config.ModelConfig` describes."""
    m = model_cfg
    if m.generator == "style_rnn":
        return StyleRNNGenerator(
            m.resolution, m.ch_g, m.frames, m.start_fp, m.max_fp, m.style_dim, m.latent_noise, m.noise_dim,
            noise_to_style=m.noise_to_style, gru_seed=m.gru_seed, head=m.head, motion_field=m.motion_field,
            max_speed=m.max_speed, motion_encoder=m.motion_encoder,
        )
    if m.generator == "dvdgan":
        return DVDGANGenerator(m.resolution, m.ch_g, m.frames)
    raise ValueError(f"unknown generator {m.generator!r}")
