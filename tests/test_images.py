"""`vsyn animate` and the REST server accept the same images and masks, and make the same model input of them.

Each case goes through both real paths -- the server's request parser (`serve.protocol.parse_request`, a multipart
upload) and the CLI's file reader (`vsyn.inference.read_photo_and_mask`, what `vsyn animate` reads) -- which must
agree on accept or refuse, and, fitted to the model's square alike, on the exact pixels when they accept.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve.protocol import Limits, RequestError, parse_request
from vsyn.errors import VsynError
from vsyn.inference import fit_image, read_photo_and_mask

RESOLUTION = 16
_y, _x = np.mgrid[0:30, 0:40]
# 40 wide, 30 high (fitting crops the sides); smooth, so JPEG keeps it close
PICTURE = np.stack([_x * 6, _y * 8, 128 + 100 * np.sin(_x / 5.0)], -1).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _exif_rotated_jpeg() -> bytes:
    """Stored 30 wide, 40 high, with an EXIF orientation tag (6: rotate 90° clockwise to view) -- a phone photo."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(np.ascontiguousarray(np.rot90(PICTURE))), "JPEG", exif=exif, quality=95)


pic = Image.fromarray(PICTURE)
IMAGES = {
    "png": _encode(pic, "PNG"),
    "jpeg": _encode(pic, "JPEG", quality=90),
    "webp": _encode(pic, "WEBP", lossless=True),
    "rgba-png": _encode(pic.convert("RGBA"), "PNG"),
    "grey-png": _encode(pic.convert("L"), "PNG"),
    "palette-png": _encode(pic.convert("P"), "PNG"),
    "exif-rotated-jpeg": _exif_rotated_jpeg(),
    "tiff": _encode(pic, "TIFF"),
    "bmp": _encode(pic, "BMP"),
    "gif": _encode(pic, "GIF"),
    "truncated-png": _encode(pic, "PNG")[: len(_encode(pic, "PNG")) // 2],
    "empty": b"",
    "text": b"not an image at all",
}
MASK = Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1)))  # a grey ramp, image-sized
MASKS = {
    "grey-png": _encode(MASK, "PNG"),
    "rgb-jpeg": _encode(MASK.convert("RGB"), "JPEG", quality=95),
    "other-size-png": _encode(MASK.resize((20, 15)), "PNG"),
    "tiff": _encode(MASK, "TIFF"),
}


def _server(image: bytes, mask: bytes | None):
    fields = {"image": image, **({"mask": mask} if mask is not None else {})}
    try:
        req = parse_request(fields, {}, resolution=RESOLUTION, default_frames=4, limits=Limits())
    except RequestError as exc:
        return "refused", exc.message
    return req.image, req.mask


def _cli(tmp_path: Path, image: bytes, mask: bytes | None):
    (tmp_path / "image").write_bytes(image)
    if mask is not None:
        (tmp_path / "mask").write_bytes(mask)
    try:
        photo, grey = read_photo_and_mask(tmp_path / "image", tmp_path / "mask" if mask is not None else None)
    except VsynError as exc:
        return "refused", str(exc)
    # the server's model input for a pixel-head model: both fitted to the square (short side, centre crop)
    fitted_mask = None if grey is None else \
        fit_image(np.round(grey * 255).astype(np.uint8), RESOLUTION).astype(np.float32)[None] / 255.0
    return fit_image(photo, RESOLUTION), fitted_mask


def refused(result) -> bool:
    return isinstance(result[0], str)


def _same(server, cli) -> None:
    assert refused(server) == refused(cli), f"server: {server[1]!r:.200}, cli: {cli[1]!r:.200}"
    if refused(server):
        return
    np.testing.assert_array_equal(server[0], cli[0])
    assert (server[1] is None) == (cli[1] is None)
    if server[1] is not None:
        np.testing.assert_array_equal(server[1], cli[1])


@pytest.mark.parametrize("name", IMAGES)
def test_images_accepted_and_refused_alike(tmp_path, name):
    server, cli = _server(IMAGES[name], None), _cli(tmp_path, IMAGES[name], None)
    _same(server, cli)
    accepted = name in ("png", "jpeg", "webp", "rgba-png", "grey-png", "palette-png", "exif-rotated-jpeg")
    assert (not refused(cli)) is accepted  # TIFF, BMP, GIF and broken files are refused by both


def test_exif_orientation_is_applied_by_both(tmp_path):
    image, _ = _cli(tmp_path, IMAGES["exif-rotated-jpeg"], None)
    upright, _ = _cli(tmp_path, IMAGES["jpeg"], None)
    assert np.abs(image.astype(int) - upright.astype(int)).mean() < 3  # same picture up to JPEG loss
    stored = np.asarray(Image.open(io.BytesIO(IMAGES["exif-rotated-jpeg"])).convert("RGB"))
    assert stored.shape == (40, 30, 3)  # without the tag it would be a different crop of a rotated picture


@pytest.mark.parametrize("name", MASKS)
def test_masks_accepted_and_refused_alike(tmp_path, name):
    server, cli = _server(IMAGES["png"], MASKS[name]), _cli(tmp_path, IMAGES["png"], MASKS[name])
    _same(server, cli)
    assert (not refused(cli)) is (name in ("grey-png", "rgb-jpeg"))
    if name == "other-size-png":
        assert "mask is 20x15; it must match the image's 40x30" in cli[1]
    if name == "grey-png":  # the ramp, fitted like the image: grey levels in [0, 1], left dark, right light
        mask = cli[1]
        assert mask.shape == (1, RESOLUTION, RESOLUTION) and mask.dtype == np.float32
        assert 0 <= mask.min() < 0.3 < 0.7 < mask.max() <= 1


def test_animate_reads_16_bit_greyscale_scaled_like_the_server(tmp_path):
    """A 16-bit greyscale PNG: v -> round(v / 257), not clipped to white (vsyn.images.to_8bit, shared with serve)."""
    import numpy as np
    from PIL import Image

    from vsyn.inference import read_photo_and_mask

    wide = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(wide).save(tmp_path / "deep.png")  # mode I;16
    photo, mask = read_photo_and_mask(tmp_path / "deep.png", tmp_path / "deep.png")
    expected = (wide.astype(np.int64) * 255 + 32767) // 65535
    assert np.array_equal(photo[..., 0], expected) and np.array_equal(photo[..., 2], expected)
    assert np.allclose(mask, expected / 255.0)
