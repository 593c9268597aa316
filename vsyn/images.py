"""Still images in: the rules `vsyn animate` and the REST server share, so both accept the same files.

PNG, JPEG and WebP only (the formats photos and masks come in; TIFF, BMP, GIF and the rest are refused rather
than half-supported), the pixel count checked from the header before any pixel is decoded, decoding errors turned
into one message, EXIF orientation applied (phone photos), and a mask must have the image's size: it is fitted to
the model exactly as the image is, so a mask of another size would mark the wrong pixels.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


class ImageError(ValueError):
    """An image a client must fix; `status` is the HTTP code a server answers with (400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def open_image(data: bytes, what: str, max_pixels: int) -> Image.Image:
    """Bytes of a PNG/JPEG/WebP -> a decoded PIL image in its upright orientation."""
    if len(data) == 0:
        raise ImageError(400, f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, f"{what} has more pixels than the limit of {max_pixels}") from None
    except UnidentifiedImageError:
        raise ImageError(415, f"{what} is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(400, f"{what} could not be read (truncated or corrupt): {exc}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(400, f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(413, f"{what} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        img.load()  # decode now: truncated or corrupt data fails here
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(400, f"{what} could not be decoded (truncated or corrupt): {exc}") from None


def check_mask_size(mask: Image.Image, image: Image.Image) -> None:
    if mask.size != image.size:
        raise ImageError(400, f"mask is {mask.size[0]}x{mask.size[1]}; it must match the image's "
                              f"{image.size[0]}x{image.size[1]}")


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) grayscale scaled to 8 bits: v -> round(v / 257), 65535 -> 255.

    PIL opens a 16-bit grayscale PNG as mode I;16 and its convert() clips every value above 255 (a near-white
    video); 16-bit RGB(A) PNGs already arrive as 8-bit RGB(A) (PIL keeps the high byte, within 1 of v / 257).
    """
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    wide = np.asarray(img, dtype=np.int64).clip(0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
