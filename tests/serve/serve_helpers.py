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


def requires_java() -> None:
    """Skip where TorchServe cannot start (no Java); `make test` installs it, so CI runs these tests."""
    import pytest

    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java")


def server_settings(model_store: Path, run_dir: Path, **overrides) -> ServerSettings:
    ports = free_ports(5)
    return ServerSettings(
        model_store=model_store,
        run_dir=run_dir,
        inference_port=ports[0],
        management_port=ports[1],
        metrics_port=ports[2],
        grpc_inference_port=ports[3],
        grpc_management_port=ports[4],
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
