"""The REST contract against a real TorchServe: formats, request shapes, masks, seeds, auth, metrics, batching."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serve_helpers import FRAMES, RES, assert_video, encode_image, grpc_predict, landscape, post

pytestmark = pytest.mark.service

# Mean absolute error (0-255) allowed between a decoded frame and the source: GIF's 256-colour palette costs more.
TOLERANCE = {"mp4": 4.0, "webm": 4.0, "gif": 8.0}


def assert_rejected(resp: requests.Response, status: int, needle: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    reason = resp.json()
    assert reason["code"] == status and needle in reason["message"], reason


@pytest.mark.parametrize(
    "fmt,shape", [("mp4", "raw"), ("webm", "multipart"), ("gif", "json"), ("mp4", "json"), ("gif", "raw")]
)
def test_formats_and_request_shapes(served, fmt: str, shape: str) -> None:
    _, client = served
    source = landscape()
    resp = post(client, shape, encode_image(source), format=fmt, frames=7, fps=12, seed=1)
    video = assert_video(resp, fmt, 7, (RES, RES))
    assert resp.headers["X-Vsyn-Seed"] == "1"
    assert np.abs(video[0].astype(float) - source).mean() < TOLERANCE[fmt]


def test_defaults_and_input_size_policy(served) -> None:
    _, client = served
    source = landscape(96, 64)  # 3:2
    resp = post(client, "raw", encode_image(source, "JPEG", quality=95))
    assert_video(resp, "mp4", FRAMES, (RES, RES))  # defaults: model's frames, native size, mp4
    assert int(resp.headers["X-Vsyn-Seed"]) >= 0  # a random seed, reported so the client can reproduce it
    resp = post(client, "raw", encode_image(source, "WEBP", lossless=True), size="input")
    video = assert_video(resp, "mp4", FRAMES, (48, 32))  # input's aspect, short side = model resolution
    small = np.asarray(__import__("PIL.Image").Image.fromarray(source).resize((48, 32)))
    assert np.abs(video[0].astype(float) - small).mean() < 8.0


def test_mask_keeps_pixels_outside_it(served) -> None:
    _, client = served
    source = landscape().astype(float)
    mask = np.zeros((RES, RES), np.uint8)
    mask[:, : RES // 2] = 255  # the left half may move
    resp = post(client, "multipart", encode_image(source.astype(np.uint8)), mask=encode_image(mask), seed=3)
    video = assert_video(resp, "mp4", FRAMES, (RES, RES)).astype(float)
    edge = RES // 2 + 2  # 4:2:0 chroma bleeds a pixel or two across the mask's edge
    still = np.abs(video[1:, :, edge:] - source[None, :, edge:]).mean(axis=(1, 2, 3))
    moving = np.abs(video[1:, :, : RES // 2 - 2] - source[None, :, : RES // 2 - 2]).mean(axis=(1, 2, 3))
    assert still.max() < TOLERANCE["mp4"], still  # every frame keeps the input outside the mask ...
    assert moving.mean() > 2 * still.mean(), (moving, still)  # ... while the (untrained) model moves inside it


def test_same_seed_same_bytes(served) -> None:
    _, client = served
    image = encode_image(landscape())
    first = post(client, "raw", image, seed=42, format="webm")
    again = post(client, "json", image, seed=42, format="webm")
    other = post(client, "raw", image, seed=43, format="webm")
    assert first.status_code == again.status_code == other.status_code == 200
    assert first.content == again.content
    assert other.content != first.content  # tiny-cpu has latent noise: the seed matters


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with no real pixel data: the decompression-bomb shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


HOSTILE = [
    # (name, shape, image, options, expected status, substring of the reason)
    ("not an image", "raw", b"this is not an image", {}, 415, "not a PNG, JPEG or WebP"),
    ("zero bytes", "raw", b"", {}, 400, "empty"),
    ("truncated png", "raw", _half(encode_image(landscape(64, 64))), {}, 400, "truncated or corrupt"),
    ("png cut at 40 bytes", "raw", encode_image(landscape(64, 64))[:40], {}, 400, "truncated or corrupt PNG"),
    ("truncated jpeg", "raw", _half(encode_image(landscape(64, 64), "JPEG")), {}, 400, "truncated or corrupt"),
    ("bomb 100k x 100k", "raw", _png_header_only(100_000, 100_000), {}, 413, "limit"),
    ("bomb 6000 x 6000", "json", _png_header_only(6000, 6000), {}, 413, "limit"),
    ("gif input", "raw", encode_image(landscape(), "GIF"), {}, 415, "not a PNG, JPEG or WebP"),
    ("bmp input", "multipart", encode_image(landscape(), "BMP"), {}, 415, "not a PNG, JPEG or WebP"),
    ("too few frames", "raw", encode_image(landscape()), {"frames": 1}, 400, "frames"),
    ("too many frames", "json", encode_image(landscape()), {"frames": 100_000}, 400, "frames"),
    ("frames not a number", "multipart", encode_image(landscape()), {"frames": "lots"}, 400, "integer"),
    ("fps zero", "raw", encode_image(landscape()), {"fps": 0}, 400, "fps"),
    ("fps nan", "json", encode_image(landscape()), {"fps": "nan"}, 400, "fps"),
    ("format avi", "json", encode_image(landscape()), {"format": "avi"}, 400, "format"),
    ("negative seed", "multipart", encode_image(landscape()), {"seed": -5}, 400, "seed"),
    ("size huge", "raw", encode_image(landscape()), {"size": "huge"}, 400, "size"),
    ("extreme aspect", "raw", encode_image(landscape(200, 20)), {}, 400, "aspect"),
]


def test_hostile_inputs_interleaved_with_good_requests(served) -> None:
    settings, client = served
    worker_pid = client.describe()[0]["workers"][0]["pid"]
    good = encode_image(landscape())
    for name, shape, image, options, status, needle in HOSTILE:
        assert_rejected(post(client, shape, image, **options), status, needle)
        assert post(client, "raw", good, frames=3, seed=0).status_code == 200, f"good request after {name!r}"
    assert client.describe()[0]["workers"][0]["pid"] == worker_pid  # the same worker handled all of it


def test_malformed_bodies(served) -> None:
    settings, client = served
    url = f"{settings.url()}/predictions/vsyn"
    json_headers = {**client.auth(), "Content-Type": "application/json"}
    assert_rejected(requests.post(url, data=b"{not json", headers=json_headers), 400, "not valid JSON")
    assert_rejected(requests.post(url, json={"frames": 3}, headers=client.auth()), 400, "'image'")
    assert_rejected(requests.post(url, json={"image": "@@@"}, headers=client.auth()), 400, "base64")
    assert_rejected(requests.post(url, json={"image": "", "zoom": 2}, headers=client.auth()), 400, "unknown")
    bad_header = {**client.auth(), "X-Vsyn-Zoom": "2"}
    assert_rejected(requests.post(url, data=encode_image(landscape()), headers=bad_header), 400, "unknown option")
    mask = encode_image(np.zeros((16, 16), np.uint8))
    assert_rejected(post(client, "multipart", encode_image(landscape()), mask=mask), 400, "must match")
    # Larger than max_request_size: TorchServe's HTTP layer refuses it (413, empty body) before the handler.
    huge = requests.post(url, data=b"\0" * (3 << 20), headers={**client.auth(), "Content-Type": "image/png"})
    assert huge.status_code == 413
    assert post(client, "raw", encode_image(landscape()), frames=3).status_code == 200


def test_auth_on_ping_and_metrics(served) -> None:
    settings, client = served
    ping = f"{settings.url()}/ping"
    assert requests.get(ping, headers=client.auth(), timeout=5).json() == {"status": "Healthy"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = requests.get(ping, headers=headers, timeout=5)
        assert denied.status_code == 400 and denied.json()["type"] == "InvalidKeyException"
    url = f"{settings.url()}/predictions/vsyn"
    assert requests.post(url, data=encode_image(landscape()), timeout=30).status_code == 400  # no key: no video
    text = client.metrics()
    assert "# TYPE ts_inference_requests_total counter" in text
    assert 'ts_inference_requests_total{model_name="vsyn"' in text
    # TorchServe 0.12 does not put /metrics behind the token (verified); it is bound to 127.0.0.1 by default.
    assert requests.get(f"{settings.url('metrics')}/metrics", timeout=5).status_code == 200
    # Model registration over the management API is off.
    register = requests.post(f"{settings.url('management')}/models?url=vsyn.mar", headers=client.auth("management"))
    assert register.status_code == 405


def test_concurrent_requests_are_batched(served) -> None:
    _, client = served
    image = encode_image(landscape())
    jobs = [dict(frames=5 if i % 4 == 0 else 7, seed=i, format=("mp4", "gif")[i % 2]) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda o: post(client, "raw", image, **o), jobs))
    for job, resp in zip(jobs, responses):
        assert_video(resp, job["format"], job["frames"], (RES, RES))
        assert resp.headers["X-Vsyn-Seed"] == str(job["seed"])
    assert max(int(r.headers["X-Vsyn-Batch-Size"]) for r in responses) > 1


def test_json_number_too_long_for_python_is_refused_by_name(served) -> None:
    """A 5000-digit seed: Python's int conversion limit (4300 digits) used to surface as a 500."""
    settings, client = served
    url = f"{settings.url()}/predictions/vsyn"
    image = base64.b64encode(encode_image(landscape())).decode()
    for field in ("seed", "frames"):
        body = f'{{"image": "{image}", "{field}": {"7" * 5000}}}'
        resp = requests.post(url, data=body, headers={**client.auth(), "Content-Type": "application/json"}, timeout=60)
        assert_rejected(resp, 400, f"{field} must be in")
        assert "5000-digit number" in resp.json()["message"] and len(resp.text) < 300  # not echoed back
    resp = requests.post(url, data=encode_image(landscape()), timeout=60,
                         headers={**client.auth(), "Content-Type": "image/png", "X-Vsyn-Seed": "9" * 5000})
    assert_rejected(resp, 400, "seed must be in")


def test_repeated_fields_are_refused_by_name(served) -> None:
    """TorchServe keeps the last of two equal form fields or JSON keys; the handler refuses them and names them."""
    settings, client = served
    url = f"{settings.url()}/predictions/vsyn"
    image = encode_image(landscape())
    fields = [("image", ("a.png", image, "image/png")), ("seed", (None, "1")), ("seed", (None, "2"))]
    assert_rejected(requests.post(url, files=fields, headers=client.auth(), timeout=60), 400,
                    "form field 'seed' appears more than once")  # fmt: skip
    two_images = [("image", ("a.png", image, "image/png")), ("image", ("b.png", image, "image/png"))]
    assert_rejected(requests.post(url, files=two_images, headers=client.auth(), timeout=60), 400,
                    "form field 'image' appears more than once")  # fmt: skip
    body = '{"image": "%s", "frames": 3, "frames": 4}' % base64.b64encode(image).decode()
    resp = requests.post(url, data=body, headers={**client.auth(), "Content-Type": "application/json"}, timeout=60)
    assert_rejected(resp, 400, "JSON field 'frames' appears more than once")
    assert post(client, "multipart", image, frames=3).status_code == 200  # each field once: served


def _png16(gray: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG (PIL opens it as mode I;16)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = gray.shape
    raw = b"".join(b"\0" + gray[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_grayscale_is_scaled_not_clipped(served) -> None:
    """v / 257 per pixel (65535 -> 255): frame 0 is the 8-bit image, not the near-white clip of every v > 255."""
    _, client = served
    source = landscape().astype(np.float64).mean(axis=2)  # 8-bit grey levels ...
    wide = np.round(source * 257).astype(np.uint16)  # ... stored in 16 bits
    resp = post(client, "raw", _png16(wide), seed=4, format="webm")
    video = assert_video(resp, "webm", FRAMES, (RES, RES)).astype(np.float64)
    expected = np.round(wide / 257.0)
    assert np.abs(video[0].mean(axis=2) - expected).mean() < TOLERANCE["webm"]
    assert video[0].mean() < 200  # clipping made it ~255


def test_cost_cap_refuses_before_decoding(served) -> None:
    """The shared .mar caps a request at 32 x 32 x 64 output pixels: one frame more is 422 with the sums, and the
    5000 x 5000 x 128-frame webm request is refused from the image header alone (no pixel data follows it)."""
    _, client = served
    image = encode_image(landscape())
    assert_rejected(post(client, "raw", image, frames=65), 422, "32x32 x 65 frames = 66560 pixels; the limit is 65536")
    wide = encode_image(landscape(128, 32))  # 4:1 with size=input: 128x32 per frame
    assert_rejected(post(client, "json", wide, frames=17, size="input"), 422, "or size=native")
    assert post(client, "raw", wide, frames=16, size="input").status_code == 200  # exactly the cap
    header_only = _png_header_only(5000, 5000)
    resp = post(client, "raw", header_only, frames=128, format="webm", size="input")
    assert_rejected(resp, 422, "32x32 x 128 frames")


def test_grpc_is_refused_unless_asked_for(served) -> None:
    """TorchServe 0.12 always opens its gRPC listeners (127.0.0.1 here); without --grpc every call is refused with
    a gRPC error code, not status OK with a JSON refusal as its prediction."""
    import grpc

    settings, client = served
    inputs = {"image": encode_image(landscape()), "frames": b"3"}
    code, details = grpc_predict(settings.grpc_inference_port, client.key(), inputs)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "gRPC is off" in details
    assert post(client, "raw", encode_image(landscape()), frames=3).status_code == 200
