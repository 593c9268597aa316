"""Helpers shared by the serving tests (plain functions, importable at collection time)."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from serve.config import ServerSettings
from serve.server import free_ports
from vsyn.video import decode_video

RES, FRAMES = 32, 9  # the tiny-cpu preset the serving tests export
ROOT = Path(__file__).resolve().parents[2]


def requires_java() -> None:
    """Skip where TorchServe cannot start (no Java); `make test` installs it, so CI runs these tests."""
    import pytest

    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java")


def server_settings(model_store: Path, run_dir: Path, **overrides) -> ServerSettings:
    ports = free_ports(6)
    return ServerSettings(
        model_store=model_store,
        run_dir=run_dir,
        inference_port=ports[0],
        management_port=ports[1],
        metrics_port=ports[2],
        grpc_inference_port=ports[3],
        grpc_management_port=ports[4],
        backend_port=ports[5],
        **overrides,
    )


def landscape(width: int = 32, height: int = 32) -> np.ndarray:
    """A smooth synthetic landscape (sky gradient over darker ground): compresses well, so codec error is small."""
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    sky = np.stack([90 + 80 * y + 0 * x, 140 + 60 * y + 0 * x, 230 - 30 * y + 0 * x], -1)
    ground = np.stack([60 + 40 * x + 0 * y, 110 + 30 * x + 0 * y, 50 + 0 * x + 0 * y], -1)
    return np.where((y > 0.6)[..., None], ground, sky).clip(0, 255).astype(np.uint8)


def encode_image(array: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def post(client, shape: str, image: bytes, mask: bytes | None = None, **options) -> requests.Response:
    """One request in one of the three shapes of serve/README.md."""
    url = f"{client.settings.url()}/predictions/vsyn"
    if shape == "raw":
        assert mask is None
        headers = {**client.auth(), **{f"X-Vsyn-{k.title()}": str(v) for k, v in options.items()}}
        return requests.post(url, data=image, headers={**headers, "Content-Type": "image/png"}, timeout=120)
    if shape == "multipart":
        files = {"image": ("image.png", image, "image/png")}
        if mask is not None:
            files["mask"] = ("mask.png", mask, "image/png")
        data = {k: str(v) for k, v in options.items()}
        return requests.post(url, data=data, files=files, headers=client.auth(), timeout=120)
    body = {"image": base64.b64encode(image).decode(), **options}
    if mask is not None:
        body["mask"] = base64.b64encode(mask).decode()
    return requests.post(url, json=body, headers=client.auth(), timeout=120)


def assert_video(resp: requests.Response, fmt: str, frames: int, size: tuple[int, int]) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif"}[fmt]
    video = decode_video(resp.content)
    assert video.shape == (frames, size[1], size[0], 3)
    return video


# ---- gRPC: TorchServe's inference service, called without generated stubs (three protobuf fields) -------------

GRPC_PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def grpc_request(model: str, inputs: dict[str, bytes]) -> bytes:
    """A PredictionsRequest: model_name = 1, input (map<string, bytes>) = 3."""
    return _field(1, model.encode()) + b"".join(_field(3, _field(1, k.encode()) + _field(2, v)) for k, v in inputs.items())


def grpc_prediction(response: bytes) -> bytes:
    """The `prediction` (field 1) of a PredictionResponse."""
    pos, out = 0, b""
    while pos < len(response):
        key, pos = _read_varint(response, pos)
        if key & 7 == 2:
            length, pos = _read_varint(response, pos)
            if key >> 3 == 1:
                out = response[pos : pos + length]
            pos += length
        elif key & 7 == 0:
            _, pos = _read_varint(response, pos)
        else:
            raise ValueError(f"unexpected wire type in {response[:32]!r}")
    return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def grpc_predict(port: int, key: str, inputs: dict[str, bytes], model: str = "vsyn", timeout: float = 60.0):
    """(gRPC status code, prediction bytes or the error's details) of one Predictions call."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(GRPC_PREDICTIONS)
        try:
            response = call(grpc_request(model, inputs), metadata=[("authorization", f"Bearer {key}")],
                            timeout=timeout)  # fmt: skip
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, grpc_prediction(response)


def raw_http(settings, method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
             source: str = "127.0.0.1", timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """One plain-HTTP request from the loopback address `source` (the front limits per client address), with
    headers sent exactly as listed (repeats included). Returns (status, headers, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", settings.inference_port, timeout=timeout,
                                      source_address=(source, 0))  # fmt: skip
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body or method in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
