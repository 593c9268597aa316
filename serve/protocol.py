"""The REST contract of `POST /predictions/<model>`: one TorchServe request in, one validated `VideoRequest` out.

Everything a client controls is checked here before any tensor exists, and an image's dimensions are read from
its header before a single pixel is decoded (the pixel cap and the cost cap, output pixels x frames, are both
checked on them), so a hostile request costs a header parse and ends as a 4xx with a JSON reason instead of a dead
worker. Pure PIL/numpy: testable without TorchServe or a model.

Three request shapes (see serve/README.md):
- raw image bytes as the body, options in `X-Vsyn-<Option>` headers (TorchServe 0.12 drops query strings);
- multipart/form-data with an `image` part, an optional `mask` part and option fields;
- application/json with base64 `image`/`mask` strings and option values.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vsyn.images import to_8bit
from vsyn.inference import fit_image
from vsyn.video import CONTENT_TYPES

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
SIZE_POLICIES = ("native", "input")
OPTIONS = ("frames", "fps", "format", "seed", "size", "loop")
HEADER_PREFIX = "x-vsyn-"
MAX_SEED = 2**63 - 1
# Set by the handler on a request's headers: names TorchServe received more than once (it keeps only the last).
# Not a possible HTTP header name (a space), so no client can send it.
DUPLICATES_KEY = "vsyn duplicates"
# What each format's files start with: data that claims a format we read and still fails to open is corrupt (400),
# not an unsupported format (415).
SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "WEBP": (b"RIFF",)}


class RequestError(Exception):
    """A request the client must fix; becomes an HTTP 4xx with a JSON body."""

    REASONS = {400: "Bad Request", 403: "Forbidden", 413: "Content Too Large", 415: "Unsupported Media Type",
               422: "Unprocessable Content", 500: "Internal Server Error"}  # fmt: skip

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def phrase(self) -> str:
        return self.REASONS.get(self.status, "Error")

    def body(self) -> str:
        return error_body(self.status, self.phrase, self.message)


def error_body(status: int, phrase: str, message: str) -> str:
    """The JSON shape TorchServe uses for its own errors, so a client parses one kind of error."""
    return json.dumps({"code": status, "type": phrase.replace(" ", ""), "message": message})


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; set per model in model-config.yaml (`handler:` section)."""

    max_image_pixels: int = 25_000_000  # checked from the header, before decoding
    # The work a request may ask for: output width x height x frames (2^26: e.g. 1920x1080 x 32 frames, or the
    # 128 px model's square x 4096 frames). Checked from the header, before decoding; 422 above it.
    max_video_pixels: int = 2**26
    max_aspect: float = 4.0  # wider panoramas would make `size=input` videos absurdly wide
    max_side: int = 1920  # motion head, size=input: the long side of the video is capped here (vsyn.render)
    min_frames: int = 2
    max_frames: int = 128
    min_fps: float = 1.0
    max_fps: float = 60.0
    default_fps: float = 25.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Limits:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class VideoRequest:
    image: np.ndarray  # uint8 (R, R, 3): the input at the model's resolution R
    mask: np.ndarray | None  # float32 (1, R, R) in [0, 1], 1 = may move; None = everything may move
    frames: int
    fps: float
    fmt: str  # mp4 | webm | gif
    seed: int
    out_size: tuple[int, int]  # (width, height) of the returned video
    loop: bool = False  # a seamless loop (motion head)
    # motion head with size=input: the photo itself (uint8 (H, W, 3)) and its mask (float32 (H, W) in [0, 1]); the
    # fields are predicted at R and the photo is warped at out_size (vsyn.inference.animate_photo)
    photo: np.ndarray | None = None
    photo_mask: np.ndarray | None = None
    render_size: str = "input"  # animate_photo's size for `photo`: input, or model (size=native with loop=true)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.fmt]


class LongNumber(str):
    """A JSON number with more digits than any option takes: kept as text, so it is refused by name instead of
    failing Python's 4300-digit int conversion limit (a ValueError outside any field)."""


MAX_NUMBER_DIGITS = 40


def _json_int(text: str) -> int | LongNumber:
    return LongNumber(text) if len(text) > MAX_NUMBER_DIGITS else int(text)


def _shown(value: Any) -> str:
    """A client's value for an error message, cut short (a reason must not echo a 16 MiB field back)."""
    if isinstance(value, LongNumber) or (isinstance(value, str) and value.lstrip("+-").isdigit() and len(value) > 40):
        return f"a {len(value.lstrip('+-'))}-digit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any) -> Any:
    return bytes(value).decode("utf-8", "replace").strip() if isinstance(value, (bytes, bytearray)) else value


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    value = _text(value)
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise RequestError(400, f"{name} must be an integer, got {_shown(value)}")
    if isinstance(value, str) and len(value.strip().lstrip("+-")) > MAX_NUMBER_DIGITS:
        raise RequestError(400, f"{name} must be in {lo}..{hi}, got {_shown(value.strip())}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(400, f"{name} must be an integer, got {_shown(value)}") from None
    if not lo <= number <= hi:
        raise RequestError(400, f"{name} must be in {lo}..{hi}, got {_shown(number)}")
    return number


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    value = _text(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(400, f"{name} must be a number, got {_shown(value)}") from None
    if isinstance(value, bool) or not lo <= number <= hi:  # also rejects nan and inf
        raise RequestError(400, f"{name} must be in {lo:g}..{hi:g}, got {_shown(value)}")
    return number


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    value = _text(value)
    if not isinstance(value, str) or value.lower() not in choices:
        raise RequestError(400, f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")
    return value.lower()


def _claimed_format(data: bytes) -> str | None:
    """The format `data` says it is by its first bytes (WebP: RIFF....WEBP, or a RIFF header cut short)."""
    for fmt, signatures in SIGNATURES.items():
        if any(data.startswith(sig) for sig in signatures):
            if fmt == "WEBP" and len(data) >= 12 and data[8:12] != b"WEBP":
                return None  # another RIFF format (AVI, WAV, ...)
            return fmt
    return None


def probe_image(data: Any, what: str, limits: Limits) -> Image.Image:
    """Bytes -> PIL image with only its header read, refusing anything but PNG/JPEG/WebP and anything over the pixel
    cap. `Image.open` reads only the header: the caps are checked on its dimensions before `decode_image`."""
    if not isinstance(data, (bytes, bytearray)):
        raise RequestError(400, f"{what} must be binary image data")
    if len(data) == 0:
        raise RequestError(400, f"{what} is empty (0 bytes)")
    claimed = _claimed_format(bytes(data[:16]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"{what} has more pixels than the limit of {limits.max_image_pixels}") from None
    except UnidentifiedImageError:
        if claimed:  # a PNG/JPEG/WebP signature, cut short or garbled after it
            raise RequestError(400, f"{what} could not be read (truncated or corrupt {claimed})") from None
        raise RequestError(415, f"{what} is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"{what} could not be read (truncated or corrupt): {exc}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise RequestError(400, f"{what} has no pixels ({width}x{height})")
    if width * height > limits.max_image_pixels:
        raise RequestError(
            413, f"{what} is {width}x{height} = {width * height} pixels; the limit is {limits.max_image_pixels}"
        )
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise RequestError(400, f"{what} is {width}x{height}; the aspect ratio may be at most {limits.max_aspect:g}:1")
    return img


def decode_image(img: Image.Image, what: str) -> Image.Image:
    """Decode the pixels of a probed image and apply its EXIF orientation."""
    try:
        img.load()  # decode now: truncated or corrupt data fails here, inside our error handling
        return ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(400, f"{what} could not be decoded (truncated or corrupt): {exc}") from None


def open_image(data: Any, what: str, limits: Limits) -> Image.Image:
    """`probe_image` then `decode_image`: bytes -> decoded PIL image, or a RequestError."""
    return decode_image(probe_image(data, what, limits), what)


def output_size(input_size: tuple[int, int], resolution: int, policy: str) -> tuple[int, int]:
    """(width, height) of the returned video: the model's square, or the input's aspect with short side R.

    Sides are even because x264/vp9 with 4:2:0 chroma need that.
    """
    if policy == "native":
        return resolution, resolution
    w, h = input_size
    scale = resolution / min(w, h)
    return max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)


def to_model_input(img: Image.Image, resolution: int, policy: str, mode: str = "RGB") -> np.ndarray:
    """PIL image -> uint8 (R, R, 3) for RGB, (R, R) for L.

    `native` uses vsyn's own fit (short side to R, centre crop), so the server gives `vsyn animate`'s pixels;
    `input` squashes the whole picture into the square, to be stretched back to its aspect afterwards.
    """
    img = to_8bit(img)
    img = img.convert(mode) if img.mode != mode else img
    if policy == "input":
        return np.asarray(img.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.uint8)
    return fit_image(np.asarray(img, dtype=np.uint8), resolution)


def _decode_b64(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise RequestError(400, f"JSON field '{name}' must be a base64 string")
    if value.startswith("data:") and "," in value:  # data URL: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"JSON field '{name}' is not valid base64") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: a JSON object that names a field twice is refused (json keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(400, f"JSON field {_shown(key)} appears more than once")
        out[key] = value
    return out


def parse_json(data: bytes) -> Any:
    """A JSON body, strictly: duplicate fields and numbers too long for any option are refused by name later on."""
    try:
        return json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_unique_pairs, parse_int=_json_int)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise RequestError(400, f"body is not valid JSON: {_shown(str(exc))}") from None
    except RecursionError:
        raise RequestError(400, "body is not valid JSON: nested too deeply") from None


def _refuse_duplicates(headers: Mapping[str, Any]) -> None:
    """Names the request sent more than once (form fields, or headers differing only in case)."""
    duplicates = headers.get(DUPLICATES_KEY)
    if duplicates:
        kind, name = duplicates[0]
        raise RequestError(400, f"{kind} {_shown(name)} appears more than once")


def _split_fields(fields: Mapping[str, Any], headers: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(image bytes, mask bytes or None, raw options) from whichever request shape the client used."""
    _refuse_duplicates(headers)
    body = fields.get("body", fields.get("data"))
    part = headers.get("body")  # TorchServe keys a part's own headers by the part's name
    body_type = str(part.get("content-type", "")) if isinstance(part, dict) else ""
    if body is not None and len(fields) == 1:
        if isinstance(body, (bytes, bytearray)) and body_type.split(";")[0].strip().lower() == "application/json":
            body = parse_json(body)
        if isinstance(body, dict):  # JSON (ours, or one TorchServe parsed when decode_input_request is on)
            unknown = sorted(set(body) - {"image", "mask", *OPTIONS})
            if unknown:
                raise RequestError(400, f"unknown JSON fields {_shown(unknown)} (known: image, mask, "
                                        f"{', '.join(OPTIONS)})")  # fmt: skip
            if "image" not in body:
                raise RequestError(400, "JSON body needs an 'image' field (base64)")
            mask = _decode_b64("mask", body["mask"]) if body.get("mask") is not None else None
            return _decode_b64("image", body["image"]), mask, {k: body[k] for k in OPTIONS if k in body}
        if isinstance(body, (list, str, int, float)) or body is None:
            raise RequestError(400, "send the image as raw bytes, multipart/form-data or a JSON object")
        options: dict[str, Any] = {}
        for key, value in headers.items():  # raw body: options travel in X-Vsyn-* headers
            if isinstance(key, str) and key.lower().startswith(HEADER_PREFIX):
                name = key.lower()[len(HEADER_PREFIX) :]
                if name not in OPTIONS:
                    raise RequestError(400, f"unknown option header {_shown(key)} (known: {', '.join(OPTIONS)})")
                if name in options:  # the same header in two spellings (TorchServe keeps header names' case)
                    raise RequestError(400, f"header {_shown(key)} appears more than once")
                options[name] = value
        return body, None, options
    unknown = sorted(set(fields) - {"image", "mask", *OPTIONS})
    if unknown:
        raise RequestError(400, f"unknown form fields {_shown(unknown)} (known: image, mask, {', '.join(OPTIONS)})")
    if "image" not in fields:
        raise RequestError(400, "multipart request needs an 'image' part")
    return fields["image"], fields.get("mask"), {k: fields[k] for k in OPTIONS if k in fields}


def parse_request(
    fields: Mapping[str, Any],
    headers: Mapping[str, Any],
    *,
    resolution: int,
    default_frames: int,
    limits: Limits,
    motion: bool = False,
) -> VideoRequest:
    """Validate one TorchServe request (`fields`: its parameters, `headers`: request and part headers).

    `motion`: the model has the motion head. Then `size` defaults to `input` (the photo itself, warped at its own
    size, long side capped at `limits.max_side`) and `loop` may be asked for.
    """
    image_data, mask_data, raw = _split_fields(fields, headers)
    frames = _int("frames", raw["frames"], limits.min_frames, limits.max_frames) if "frames" in raw else default_frames
    fps = _float("fps", raw["fps"], limits.min_fps, limits.max_fps) if "fps" in raw else limits.default_fps
    fmt = _choice("format", raw.get("format", "mp4"), tuple(CONTENT_TYPES))
    policy = _choice("size", raw.get("size", "input" if motion else "native"), SIZE_POLICIES)
    seed = _int("seed", raw["seed"], 0, MAX_SEED) if "seed" in raw else secrets.randbelow(MAX_SEED)
    loop_value = _text(raw.get("loop", "false"))
    loop_value = str(loop_value).lower() if isinstance(loop_value, bool) else loop_value  # JSON true / false
    loop = _choice("loop", loop_value, ("true", "false", "1", "0")) in ("true", "1")
    if loop and not motion:
        raise RequestError(400, "loop=true needs a motion-head model (model.head=motion); this one synthesises pixels")
    full_res = motion and (policy == "input" or loop)  # rendered by animate_photo (native loops: at model size)

    img = probe_image(image_data, "image", limits)
    if full_res and policy == "input":  # (width, height) of the photo warped at its own size (vsyn.render)
        from vsyn.render import output_size as warp_size

        h, w = warp_size(img.size[1], img.size[0], "input", max_side=limits.max_side)
        width, height = w, h
    else:
        width, height = output_size(img.size, resolution, policy)  # EXIF rotation swaps the sides, not the product
    if width * height * frames > limits.max_video_pixels:
        raise RequestError(422, f"the video would be {width}x{height} x {frames} frames = {width * height * frames} "
                                f"pixels; the limit is {limits.max_video_pixels} per request (ask for fewer frames"
                                f"{' or size=native' if policy == 'input' else ''})")  # fmt: skip
    mask_img = probe_image(mask_data, "mask", limits) if mask_data is not None else None
    img = decode_image(img, "image")
    mask = None
    if mask_img is not None:
        mask_img = decode_image(mask_img, "mask")
        if mask_img.size != img.size:
            raise RequestError(400, f"mask is {mask_img.size[0]}x{mask_img.size[1]}; it must match the image's "
                                    f"{img.size[0]}x{img.size[1]}")  # fmt: skip
        if full_res:
            photo_mask = np.asarray(to_8bit(mask_img).convert("L"), dtype=np.uint8)
            if policy == "native":
                photo_mask = fit_image(photo_mask, resolution)
            photo_mask = photo_mask.astype(np.float32) / 255.0
        else:
            mask = to_model_input(mask_img, resolution, policy, mode="L").astype(np.float32)[None] / 255.0
    if full_res:
        photo = np.asarray(to_8bit(img).convert("RGB"), dtype=np.uint8)
        image = fit_image(photo, resolution)
        return VideoRequest(image=image, mask=None, frames=frames, fps=fps, fmt=fmt, seed=seed,
                            out_size=(width, height), loop=loop, photo=photo if policy == "input" else image,
                            photo_mask=photo_mask if mask_img is not None else None,
                            render_size="input" if policy == "input" else "model")
    return VideoRequest(
        image=to_model_input(img, resolution, policy),
        mask=mask,
        frames=frames,
        fps=fps,
        fmt=fmt,
        seed=seed,
        out_size=output_size(img.size, resolution, policy),
        loop=loop,
    )
