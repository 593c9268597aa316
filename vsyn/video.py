"""Encode and decode short clips in memory with PyAV (no system ffmpeg, no torchvision video reader).

Encoding settings are fixed (single-threaded x264/vp9, fixed CRF), so the same frames always give the same bytes:
the serving contract "same seed, same bytes" relies on that. The one knob is the x264 preset (mp4 only): a faster
preset trades file size for encode time at the same CRF, and stays deterministic (same preset, same bytes).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from PIL import Image

from vsyn.errors import VsynError

FORMATS = {
    # no lookahead: x264 gave different bytes for equal input about 1 in 60 times under CPU load with it on
    "mp4": ("mp4", "libx264", "yuv420p", {"crf": "17", "preset": "medium", "threads": "1",
                                          "x264-params": "rc-lookahead=0:sync-lookahead=0:mbtree=0"}),
    "webm": ("webm", "libvpx-vp9", "yuv420p", {"crf": "20", "b": "0", "threads": "1", "row-mt": "0"}),
    "gif": ("gif", "gif", "pal8", {}),
}
CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif"}
# x264's speed presets, fastest first ("placebo" left out: far slower than veryslow for no visible gain)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_PRESET = "medium"


def x264_preset(preset: str | None) -> str:
    """The x264 preset to use (None: medium), or a VsynError naming the allowed ones: config typos fail early."""
    if preset is None:
        return DEFAULT_PRESET
    if preset not in X264_PRESETS:
        raise VsynError(f"unknown x264 preset {preset!r} (use one of {', '.join(X264_PRESETS)})")
    return preset


def _even(frames: np.ndarray) -> np.ndarray:
    """x264/vp9 with 4:2:0 chroma need even sides: pad odd ones by repeating the last row/column."""
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def _palette_frames(frames: np.ndarray) -> list[av.VideoFrame]:
    """GIF needs 8-bit palettes: one palette for the whole clip (from a median cut over its frames) keeps colours
    stable over time, instead of per-frame palettes that flicker."""
    t, h, w, _ = frames.shape
    step = max(1, t // 8)
    montage = Image.fromarray(np.concatenate(list(frames[::step]), axis=0))
    palette_img = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.asarray(palette_img.getpalette(), dtype=np.uint8)[: 256 * 3].reshape(-1, 3)
    argb = np.zeros((256, 4), dtype=np.uint8)
    argb[:, 0] = 255
    argb[: len(rgb), 1:] = rgb
    out = []
    for frame in frames:
        idx = Image.fromarray(frame).quantize(palette=palette_img, dither=Image.Dither.NONE)
        out.append(av.VideoFrame.from_ndarray((np.asarray(idx, dtype=np.uint8), argb), format="pal8"))
    return out


def encode_video(frames: np.ndarray, fps: float = 25.0, fmt: str = "mp4", *, preset: str | None = None) -> bytes:
    """frames: uint8 (T, H, W, 3) -> encoded bytes of container `fmt` (mp4 | webm | gif).

    `preset`: x264 speed preset for mp4 (`X264_PRESETS`; None = medium). It is validated for every format but
    only mp4 uses it: webm (VP9) and gif encode as before.
    """
    return encode_chunks([frames], fps, fmt, preset=preset)


def encode_chunks(chunks: Iterable[np.ndarray], fps: float = 25.0, fmt: str = "mp4", *,
                  preset: str | None = None) -> bytes:
    """Like `encode_video`, from frames arriving in chunks (uint8 (k, H, W, 3) each, same H and W): full-resolution
    animations are encoded as they are rendered, so no whole clip is ever held as frames (GIF apart: its one
    palette needs every frame). Equal frames give equal bytes however they are chunked."""
    if fmt not in FORMATS:
        raise VsynError(f"unsupported video format {fmt!r} (use one of {', '.join(FORMATS)})")
    preset = x264_preset(preset)
    container_fmt, codec, pix_fmt, options = FORMATS[fmt]
    if fmt == "mp4":
        # x264 applies the preset first and x264-params after it, so lookahead stays off under every preset
        options = {**options, "preset": preset}
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    # bitexact: no random segment UIDs or encoder version strings, so equal frames give equal bytes
    with av.open(buf, mode="w", format=container_fmt, options={"fflags": "+bitexact"}) as container:
        stream = None
        index = 0
        held: list[np.ndarray] = []  # gif only
        for frames in chunks:
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(f"expected uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
            if pix_fmt == "pal8":
                held.append(frames)
                continue
            frames = _even(frames)
            if stream is None:
                stream = _add_stream(container, codec, rate, pix_fmt, options, frames.shape[1], frames.shape[2])
            elif (stream.height, stream.width) != frames.shape[1:3]:
                raise ValueError(f"chunk of {frames.shape[1:3]} after frames of {(stream.height, stream.width)}")
            # RGB -> YUV here, single-threaded: swscale's threaded conversion gave different bytes under CPU load
            for f in frames:
                vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt, threads=1)
                index = _mux(container, stream, vf, index)
        if pix_fmt == "pal8":
            frames = np.concatenate(held) if held else np.zeros((0, 2, 2, 3), np.uint8)
            if len(frames):
                stream = _add_stream(container, codec, rate, pix_fmt, options, frames.shape[1], frames.shape[2])
                for vf in _palette_frames(frames):
                    index = _mux(container, stream, vf, index)
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _add_stream(container, codec: str, rate: Fraction, pix_fmt: str, options: dict, height: int, width: int):
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = pix_fmt
    stream.options = dict(options)
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    stream.codec_context.thread_count = 1  # thread count changes x264's output; 1 is the same on every machine
    stream.codec_context.time_base = Fraction(1) / rate
    return stream


def _mux(container, stream, frame: av.VideoFrame, index: int) -> int:
    frame.pts = index  # explicit timestamps: nothing is left for the muxer to guess
    for packet in stream.encode(frame):
        container.mux(packet)
    return index + 1


def resize_video(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, size[1], size[0], 3); a no-op at the same size."""
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)) for f in frames])


def decode_video(source: bytes | str | Path) -> np.ndarray:
    """Decode every frame of a video (bytes or path) to uint8 (T, H, W, 3)."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(handle) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as exc:
        raise VsynError(f"cannot decode video: {exc}") from None
    if not frames:
        raise VsynError("video has no frames")
    return np.stack(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write frames to `path`; the container follows the suffix (.mp4, .webm, .gif)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    data = encode_video(frames, fps=fps, fmt=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def video_grid(videos: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 (N, T, H, W, 3) clips into one (T, H', W', 3) clip, for sample sheets."""
    n, t, h, w, c = videos.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((t, rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = videos[i]
    return grid


def contact_sheet(frames: dict[int, np.ndarray], *, gain: float = 4.0, pad: int = 4) -> np.ndarray:
    """One still that shows what a clip does: the given frames side by side (uint8 (H, W, 3) each, keyed by index),
    then `gain`·|last − first| per pixel (grey, the mean over channels): black where nothing moved.

    Frames are laid out left to right in index order, on a white background; returns uint8 (H', W', 3).
    """
    order = sorted(frames)
    first, last = frames[order[0]].astype(np.int16), frames[order[-1]].astype(np.int16)
    diff = np.clip(np.abs(last - first).mean(axis=-1) * gain, 0, 255).astype(np.uint8)
    panels = [frames[i] for i in order] + [np.repeat(diff[..., None], 3, axis=-1)]
    h, w = panels[0].shape[:2]
    sheet = np.full((h + 2 * pad, len(panels) * (w + pad) + pad, 3), 255, np.uint8)
    for k, panel in enumerate(panels):
        x = pad + k * (w + pad)
        sheet[pad : pad + h, x : x + w] = panel
    return sheet
