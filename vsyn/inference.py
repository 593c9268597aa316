"""Inference: load a generator from a snapshot and turn still images into clips.

The one path used by `vsyn animate`, the TorchServe handler and the evaluation code, so that all three produce
the same pixels for the same image and seed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from vsyn.config import Config, config_from_dict
from vsyn.errors import VsynError
from vsyn.images import ImageError, check_mask_size, open_image, to_8bit
from vsyn.nn import build_generator
from vsyn.snapshot import load_state, resolve_snapshot

MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard for user images (checked before decoding pixels)


ENCODER_PREFIX = "motion_encoder."


def load_generator(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
                   with_encoder: bool = False) -> tuple[torch.nn.Module, Config]:
    """Build the generator described by a snapshot's config.json and load its (EMA) weights, in eval mode.

    The motion encoder (model.motion_encoder, reconstruction training only) is left out unless `with_encoder`:
    generation never runs it, and weights saved without it (`inference_state`) load the same way."""

    weights, config_path = resolve_snapshot(path, ema=ema)
    try:
        cfg = config_from_dict(json.loads(config_path.read_text()))
    except json.JSONDecodeError as exc:
        raise VsynError(f"config '{config_path}' is not valid JSON: {exc}") from None
    state = load_state(weights)
    model_cfg = cfg.model
    if not with_encoder:
        model_cfg = dataclasses.replace(model_cfg, motion_encoder=False)
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    elif cfg.model.motion_encoder and not any(k.startswith(ENCODER_PREFIX) for k in state):
        raise VsynError(f"weights '{weights}' were saved without the motion encoder (inference weights)")
    generator = build_generator(model_cfg)
    missing, unexpected = generator.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VsynError(
            f"weights '{weights}' do not fit the configured generator "
            f"(missing {len(missing)} keys, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
    return generator.to(device).eval().requires_grad_(False), cfg


def inference_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A generator state without the motion encoder: what generation needs (a reconstruction-trained motion64 is
    17.8 MiB with it, 15.3 MiB without)."""
    return {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}


def read_image_file(path: str | Path, what: str = "image") -> Image.Image:
    """A PNG/JPEG/WebP file, decoded and upright (`vsyn.images`: the rules the server applies to uploads)."""
    path = Path(path)
    if path.is_dir():
        raise VsynError(f"{what} '{path}' is a folder, not an image file")
    if not path.is_file():
        raise VsynError(f"{what} '{path}' does not exist")
    try:
        # 16-bit greyscale scaled to 8 bits (PIL's convert would clip it to white), as the server does
        return to_8bit(open_image(path.read_bytes(), f"{what} '{path}'", MAX_IMAGE_PIXELS))
    except ImageError as exc:
        raise VsynError(str(exc)) from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to uint8 (H, W, 3), with one clear error for anything unreadable."""
    return np.asarray(read_image_file(path).convert("RGB"), dtype=np.uint8)


def read_photo_and_mask(image_path: str | Path, mask_path: str | Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """An image and an optional mask file, read by the server's rules for uploads: uint8 (H, W, 3) and float32
    (H, W) in [0, 1] (the mask's grey levels, white = may move). The mask must have the image's size, as the
    server requires, so the same files work (or fail) the same way in `vsyn animate` and over REST."""
    image = read_image_file(image_path)
    photo = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mask_path is None:
        return photo, None
    mask = read_image_file(mask_path, what="mask")
    try:
        check_mask_size(mask, image)
    except ImageError as exc:
        raise VsynError(f"{exc} ('{mask_path}' vs '{image_path}')") from None
    return photo, np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def fit_image(image: np.ndarray, resolution: int) -> np.ndarray:
    """Aspect-preserving resize of the short side to `resolution`, then center crop: no squashing."""
    h, w = image.shape[:2]
    if (h, w) == (resolution, resolution):
        return image
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS))
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    return np.ascontiguousarray(resized[top : top + resolution, left : left + resolution])


def _as_float_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be uint8 (B,H,W,3), got {images.dtype} {images.shape}")
        # torch.tensor copies: decoded images are often read-only arrays, which from_numpy warns about
        return torch.tensor(images, device=device).permute(0, 3, 1, 2).float().div(255)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"tensor images must be (B,3,H,W) in [0,1], got {tuple(images.shape)}")
    return images.to(device=device, dtype=torch.float32)


def sample_noise(generator: torch.nn.Module, seeds: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """Per-video noise, each from its own seeded RNG: a video depends on its seed only, not on its batch mates."""
    parts = []
    for seed in seeds:
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = generator.sample_noise(1, generator=rng, device="cpu")
        if noise is None:
            return None
        parts.append(noise)
    return torch.cat(parts).to(device)


@torch.no_grad()
def animate(
    generator: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    *,
    num_frames: int | None = None,
    seeds: Sequence[int] | None = None,
    mask: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Images (uint8 (B,H,W,3) or float (B,3,H,W) in [0,1], at the model's resolution) -> uint8 (B,T,H,W,3).

    Frame 0 is the input exactly. `mask` (B,1,H,W) in [0,1] marks where motion is allowed; elsewhere every frame
    keeps the input's pixels. `seeds` (one per image, default 0) fix the latent noise of stochastic generators.
    """
    device = next(generator.parameters()).device
    x = _as_float_images(images, device)
    batch = x.shape[0]
    seeds = list(seeds) if seeds is not None else [0] * batch
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} images")
    video = generator(x, num_frames=num_frames, noise=sample_noise(generator, seeds, device)).float()
    if mask is not None:
        m = torch.as_tensor(mask, device=device, dtype=torch.float32)
        if m.shape != (batch, 1, *x.shape[2:]):
            raise ValueError(f"mask must be (B,1,H,W) = {(batch, 1, *x.shape[2:])}, got {tuple(m.shape)}")
        video = m[:, None] * video + (1 - m[:, None]) * x[:, None]
    video[:, 0] = x
    # contiguous on the device first: a strided device-to-host copy is several times slower
    return video.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).contiguous().cpu().numpy()


def check_mask_aspect(mask_hw: tuple[int, int], photo_hw: tuple[int, int]) -> None:
    """A mask may have any size but must cover the photo as it is: the same aspect ratio within 1%."""
    (mh, mw), (ph, pw) = mask_hw, photo_hw
    if abs((mw / mh) / (pw / ph) - 1) > 0.01:
        raise VsynError(f"mask is {mw}x{mh} but the image is {pw}x{ph}: a mask must have the image's aspect ratio")


def is_motion_model(generator: torch.nn.Module) -> bool:
    return getattr(generator, "head", "pixels") == "motion"


@torch.no_grad()
def motion_canvas(generator: torch.nn.Module, photo: np.ndarray, *, num_frames: int, seed: int = 0):
    """The motion head's fields over a whole photo (any aspect) at model scale: `vsyn.render.stitch` of the square
    windows the model sees, all animated with the same seed's latent noise."""
    from vsyn.render import canvas_views, plan_canvas, stitch

    device = next(generator.parameters()).device
    canvas = plan_canvas(photo.shape[0], photo.shape[1], generator.resolution)
    views = _as_float_images(canvas_views(photo, canvas), device)
    noise = sample_noise(generator, [seed] * views.shape[0], device)
    return stitch(generator.motion_fields(views, num_frames=num_frames, noise=noise), canvas)


def animate_photo(
    generator: torch.nn.Module,
    photo: np.ndarray,
    *,
    num_frames: int | None = None,
    seed: int = 0,
    size: str | int = "input",
    max_side: int | None = None,
    loop: bool = False,
    mask: np.ndarray | None = None,
) -> tuple[tuple[int, int], Iterator[np.ndarray]]:
    """One photo (uint8 (H, W, 3), any size) -> ((h, w), uint8 frame chunks (k, h, w, 3)); frame 0 is the photo.

    Motion head: the photo itself is warped at `size` ("input": its own size; "model"; or a long side in px), the
    long side capped at `max_side` (default 1920), sides even; `loop` makes a seamless loop; `mask` (float (H', W')
    in [0, 1], the photo's aspect) keeps whatever it marks 0 bit-exactly still. Pixel head: the model's square video
    (short side resized, centre crop), resized to `size` if that is not "model"; no loops.
    """
    from vsyn.render import DEFAULT_MAX_SIDE, output_size, read_ahead, render

    max_side = max_side or DEFAULT_MAX_SIDE
    frames = num_frames or generator.frames
    if frames < 2:
        raise VsynError("frames must be >= 2 (frame 0 is the input)")
    if mask is not None:
        check_mask_aspect(mask.shape[:2], photo.shape[:2])
    res = generator.resolution
    if is_motion_model(generator):
        out = output_size(photo.shape[0], photo.shape[1], size, max_side=max_side, resolution=res)
        fields = motion_canvas(generator, photo, num_frames=frames, seed=seed)
        device = next(generator.parameters()).device
        # rendered one chunk ahead in a thread: the next chunk warps while the caller encodes this one
        return out, read_ahead(render(photo, fields, out, frames, loop=loop, mask=mask, device=device))
    if loop:
        raise VsynError("seamless loops need a motion-head model (model.head=motion); this one synthesises pixels")
    image = fit_image(photo, res)[None]
    m = None if mask is None else fit_image((mask * 255 + 0.5).astype(np.uint8)[..., None].repeat(3, -1), res)
    video = animate(generator, image, num_frames=frames, seeds=[seed],
                    mask=None if m is None else m[None, None, ..., 0].astype(np.float32) / 255)[0]
    out = output_size(res, res, size, max_side=max_side, resolution=res) if size != "input" else \
        output_size(photo.shape[0], photo.shape[1], "input", max_side=max_side)
    from vsyn.video import resize_video

    return out, iter([resize_video(video, (out[1], out[0]))])
