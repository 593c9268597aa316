"""Serving a motion-head model: size=input is the photo itself warped at its own size (long side capped), loops,
exact masks; a pixel model refuses loops. The handler in process (test_handler.py's stand-in context) on an
exported archive's snapshot."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from serve_helpers import encode_image, landscape
from test_handler import FakeContext

from serve.archive import ServingOptions, export
from serve.handler import VsynHandler
from vsyn.config import load_config
from vsyn.nn import build_generator
from vsyn.snapshot import save_snapshot
from vsyn.video import decode_video


@pytest.fixture(scope="module")
def motion_dir(tmp_path_factory) -> object:
    """A motion-head snapshot, exported to a .mar and unpacked as TorchServe would (model_dir)."""
    root = tmp_path_factory.mktemp("motion")
    cfg = load_config("tiny-motion", ["model.resolution=32", "model.frames=6", "model.ch_g=4"])
    torch.manual_seed(0)
    g = build_generator(cfg.model)
    snap = save_snapshot(root / "snap", g, g, cfg, step=1, kimg=0.001)
    mar = export(snap, root / "store", name="motion", version="1.0", options=ServingOptions(), force=False)
    model_dir = root / "model_dir"
    with zipfile.ZipFile(mar) as z:
        z.extractall(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def handler(motion_dir) -> VsynHandler:
    h = VsynHandler()
    h.initialize(FakeContext(motion_dir, handler_options={"precision": "fp32", "max_frames": 16, "max_side": 96}))
    return h


def ask(handler: VsynHandler, image: np.ndarray, mask: np.ndarray | None = None, **options) -> tuple[list, FakeContext]:
    fields = {"image": bytearray(encode_image(image))}
    if mask is not None:
        fields["mask"] = bytearray(encode_image(mask))
    fields.update({k: str(v).encode() for k, v in options.items()})
    ctx = FakeContext(".", [{"content-type": "multipart/form-data"}])
    return handler.handle([fields], ctx), ctx


def test_default_is_the_photo_itself_at_its_own_size(handler):
    photo = landscape(80, 50)  # not square, not the model's 32 px
    out, ctx = ask(handler, photo, frames=5, seed=3)
    assert ctx.status == {}, out
    video = decode_video(out[0])
    assert video.shape == (5, 50, 80, 3)  # the photo's size (even sides), not a 32 px square
    assert np.abs(video[0].astype(int) - photo).mean() < 3  # frame 0 is the photo (through H.264)


def test_long_side_is_capped_and_loops_come_back_to_frame_0(handler):
    photo = landscape(200, 100)  # the handler caps the long side at 96 (max_side)
    out, ctx = ask(handler, photo, frames=6, seed=1, loop="true", format="webm")
    assert ctx.status == {}, out
    assert decode_video(out[0]).shape == (6, 48, 96, 3)
    native, _ = ask(handler, photo, frames=6, seed=1, loop="true", size="native")
    assert decode_video(native[0]).shape == (6, 32, 32, 3)  # loops at the model's square too


def test_mask_keeps_pixels_still_through_the_server(handler):
    photo = landscape(64, 64)
    mask = np.zeros((64, 64, 3), np.uint8)
    mask[:20] = 255  # only the top may move
    out, ctx = ask(handler, photo, mask=mask, frames=5, seed=2, format="gif")
    assert ctx.status == {}, out
    video = decode_video(out[0])
    # GIF keeps one palette for the clip: a still pixel has the same palette colour in every frame
    assert np.array_equal(video[:, 40:], np.broadcast_to(video[0, 40:], video[:, 40:].shape))


def test_pixel_models_refuse_loops(checkpoint):
    h = VsynHandler()
    h.initialize(FakeContext(checkpoint, handler_options={"precision": "fp32"}))
    out, ctx = ask(h, landscape(), frames=4, loop="true")
    assert ctx.status == {0: 400} and "motion-head" in json.loads(out[0])["message"]
