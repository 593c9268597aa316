"""Request parsing and validation, without a server: every shape, every limit, every refusal code."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from serve_helpers import encode_image, landscape

from serve.protocol import Limits, RequestError, output_size, parse_request
from vsyn.video import resize_video

RES = 32


def parse(fields, headers=None, **limits):
    return parse_request(fields, headers or {}, resolution=RES, default_frames=9, limits=Limits(**limits))


def raw(data: bytes, content_type: str = "image/png", **options) -> tuple[dict, dict]:
    headers = {"body": {"content-type": content_type}, **{f"X-Vsyn-{k}": str(v) for k, v in options.items()}}
    return {"body": bytearray(data)}, headers


def refused(fields, headers=None, **limits) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(fields, headers, **limits)
    return info.value


def test_raw_body_with_header_options() -> None:
    req = parse(*raw(encode_image(landscape(64, 48)), frames=5, fps=12.5, format="GIF", seed=7, size="input"))
    assert (req.frames, req.fps, req.fmt, req.seed, req.out_size) == (5, 12.5, "gif", 7, (42, 32))
    assert req.image.shape == (RES, RES, 3) and req.image.dtype == np.uint8
    assert req.mask is None and req.content_type == "image/gif"


def test_defaults() -> None:
    req = parse(*raw(encode_image(landscape(), "JPEG")))
    assert (req.frames, req.fps, req.fmt, req.out_size) == (9, 25.0, "mp4", (RES, RES))
    assert 0 <= req.seed < 2**63


def test_json_already_decoded_and_as_bytes() -> None:
    image = base64.b64encode(encode_image(landscape())).decode()
    mask = "data:image/png;base64," + base64.b64encode(encode_image(np.full((32, 32), 255, np.uint8))).decode()
    body = {"image": image, "mask": mask, "frames": 4, "format": "webm"}
    for value in (body, bytearray(json.dumps(body).encode())):
        req = parse({"body": value}, {"body": {"content-type": "application/json; charset=utf-8"}})
        assert req.frames == 4 and req.fmt == "webm"
        assert req.mask.shape == (1, RES, RES) and np.allclose(req.mask, 1.0)


def test_multipart_fields() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    fields = {"image": bytearray(encode_image(landscape())), "mask": bytearray(encode_image(mask)),
              "frames": bytearray(b"6"), "seed": "11"}  # fmt: skip
    req = parse(fields)
    assert req.frames == 6 and req.seed == 11
    assert req.mask[0, :, :16].min() == 1.0 and req.mask[0, :, 16:].max() == 0.0


@pytest.mark.parametrize(
    "data,status,needle",
    [
        (b"", 400, "empty"),
        (b"GIF89a not really", 415, "not a PNG"),
        (encode_image(landscape(), "BMP"), 415, "not a PNG"),
        (encode_image(landscape(), "TIFF"), 415, "not a PNG"),
        (encode_image(landscape(64, 64), "JPEG")[:300], 400, "truncated or corrupt"),
        (encode_image(landscape(8, 64)), 400, "aspect"),
    ],
)
def test_bad_images(data: bytes, status: int, needle: str) -> None:
    err = refused(*raw(data))
    assert err.status == status and needle in err.message
    assert json.loads(err.body()) == {"code": status, "type": err.phrase.replace(" ", ""), "message": err.message}


def test_pixel_cap_is_checked_before_decoding(monkeypatch) -> None:
    from PIL import ImageFile

    def never(*_a, **_k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    err = refused(*raw(encode_image(landscape(64, 64))), max_image_pixels=64 * 64 - 1)
    assert err.status == 413 and "64x64" in err.message


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"frames": 1}, "frames"),
        ({"frames": 129}, "frames"),
        ({"frames": 2.5}, "integer"),
        ({"frames": True}, "integer"),
        ({"fps": "inf"}, "fps"),
        ({"fps": 61}, "fps"),
        ({"format": "avi"}, "format"),
        ({"size": "4k"}, "size"),
        ({"seed": 2**63}, "seed"),
        ({"zoom": 2}, "unknown"),
    ],
)
def test_out_of_range_options(options: dict, needle: str) -> None:
    body = {"image": base64.b64encode(encode_image(landscape())).decode(), **options}
    err = refused({"body": body}, {"body": {"content-type": "application/json"}})
    assert err.status == 400 and needle in err.message


def test_request_shape_errors() -> None:
    assert "JSON" in refused({"body": bytearray(b"{oops")}, {"body": {"content-type": "application/json"}}).message
    assert "'image'" in refused({"body": {"frames": 3}}).message
    assert "base64" in refused({"body": {"image": "%%%"}}).message
    assert "'image' part" in refused({"frames": b"3"}).message
    assert "unknown form fields" in refused({"image": b"x", "colour": b"red"}).message
    assert "unknown option header" in refused(*raw(b"x", zoom=2)).message
    assert "raw bytes" in refused({"body": "plain text"}).message
    small_mask = encode_image(np.zeros((16, 16), np.uint8))
    assert "must match" in refused({"image": encode_image(landscape()), "mask": small_mask}).message


def test_output_size_and_resize() -> None:
    assert output_size((640, 480), 128, "native") == (128, 128)
    assert output_size((640, 480), 128, "input") == (170, 128)
    assert output_size((481, 1000), 128, "input") == (128, 266)
    video = np.zeros((3, 32, 32, 3), np.uint8)
    assert resize_video(video, (42, 32)).shape == (3, 32, 42, 3)
    assert resize_video(video, (32, 32)) is video


def test_cut_short_or_corrupt_images_of_a_known_format_are_400_not_415() -> None:
    png, jpeg = encode_image(landscape(64, 64)), encode_image(landscape(64, 64), "JPEG")
    webp = encode_image(landscape(64, 64), "WEBP")
    for data in (png[:40], png[:8], png[:20] + b"\0" * 100, jpeg[:3], jpeg[:200], webp[:12], webp[:30]):
        err = refused(*raw(data))
        assert err.status == 400 and "truncated or corrupt" in err.message, (data[:12], err.message)
    for data in (b"RIFF\x10\x00\x00\x00AVI LIST", b"\x89PNX....", b"GIF89a"):  # other formats: unsupported
        assert refused(*raw(data)).status == 415


def test_high_bit_depth_grayscale_is_scaled_to_8_bits_exactly() -> None:
    """A 16-bit grayscale PNG at the model's size: the model input is round(v / 257) per pixel (within 1/255 of
    v / 65535), where PIL's own conversion clipped every value above 255 to white."""
    from PIL import Image

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (RES, RES), dtype=np.uint16)
    buf = __import__("io").BytesIO()
    Image.fromarray(wide).save(buf, "PNG")  # mode I;16
    req = parse(*raw(buf.getvalue(), size="input"))
    expected = np.round(wide / 257.0)
    assert np.array_equal(req.image, np.repeat(expected[..., None], 3, axis=2).astype(np.uint8))
    assert np.abs(req.image[..., 0] / 255.0 - wide / 65535.0).max() <= 0.5 / 255 + 1e-9
    mask = parse({"image": encode_image(landscape()), "mask": buf.getvalue(), "size": "input"})  # masks too
    assert np.allclose(mask.mask[0], expected / 255.0)


def test_json_is_parsed_strictly() -> None:
    image = base64.b64encode(encode_image(landscape())).decode()
    ctype = {"body": {"content-type": "application/json"}}
    cases = [
        ('{"image": "%s", "seed": 1, "seed": 2}' % image, "JSON field 'seed' appears more than once"),
        ('{"image": "%s", "seed": %s}' % (image, "9" * 5000), "seed must be in 0..9223372036854775807, got a 5000-digit"),
        ('{"image": "%s", "frames": -%s}' % (image, "1" * 4400), "frames must be in 2..128, got a 4400-digit number"),
        ('{"image": "%s", "fps": 1e999}' % image, "fps must be in"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ]
    for body, needle in cases:
        err = refused({"body": bytearray(body.encode())}, ctype)
        assert err.status == 400 and needle in err.message and len(err.message) < 200, err.message
    assert parse({"body": bytearray(('{"image": "%s", "seed": 123}' % image).encode())}, ctype).seed == 123


def test_names_sent_twice_are_refused() -> None:
    from serve.protocol import DUPLICATES_KEY

    fields = {"image": bytearray(encode_image(landscape())), "seed": b"2"}
    err = refused(fields, {DUPLICATES_KEY: [("form field", "seed")]})
    assert err.status == 400 and err.message == "form field 'seed' appears more than once"
    data, headers = raw(encode_image(landscape()), Seed=1)
    err = refused(data, {**headers, "x-vsyn-seed": "2"})  # the same header in another case: TorchServe keeps both
    assert err.status == 400 and "appears more than once" in err.message


def test_cost_cap_is_checked_before_decoding(monkeypatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda *_a, **_k: (_ for _ in ()).throw(AssertionError("decoded")))
    err = refused(*raw(encode_image(landscape(128, 32)), frames=20, size="input"), max_video_pixels=128 * 32 * 19)
    assert err.status == 422 and err.message.startswith("the video would be 128x32 x 20 frames = 81920 pixels")
    assert json.loads(err.body())["type"] == "UnprocessableContent"
