"""The inference path behind `vsyn animate`, the TorchServe handler and evaluation."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vsyn.config import load_config
from vsyn.errors import VsynError
from vsyn.inference import animate, fit_image, load_generator
from vsyn.nn import build_generator
from vsyn.snapshot import COMPLETE_MARKER, newest_checkpoint, save_snapshot
from vsyn.video import decode_video

OVERRIDES = ["model.resolution=32", "model.frames=6", "model.ch_g=4", "model.latent_noise=true"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config("tiny-cpu", OVERRIDES)
    gen, ema = build_generator(cfg.model), build_generator(cfg.model)
    root = tmp_path_factory.mktemp("run")
    for step in (9, 30, 20):  # newest by step, not by name or mtime
        d = save_snapshot(root / "checkpoints" / f"ckpt-{step}", gen, ema, cfg, step=step, kimg=step / 1000)
        (d / COMPLETE_MARKER).touch()
    incomplete = save_snapshot(root / "checkpoints" / "ckpt-99", gen, ema, cfg, step=99, kimg=0.099)
    caught = save_snapshot(root / "checkpoints" / ".tmp-ckpt-50", gen, ema, cfg, step=50, kimg=0.05)
    (caught / COMPLETE_MARKER).touch()  # killed between the marker and the rename: never a candidate
    return root, cfg, incomplete


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return (rng.random((1, 32, 32, 3)) * 255).astype(np.uint8)


def test_run_dir_resolves_to_newest_complete_checkpoint(snapshot):
    root, _, incomplete = snapshot
    assert newest_checkpoint(root).name == "ckpt-30"  # numeric order; ckpt-99 incomplete; temp dirs ignored
    generator, cfg = load_generator(root)
    assert cfg.model.resolution == 32 and not generator.training


def test_frame0_is_the_input_and_noise_is_seeded(snapshot, image):
    generator, _ = load_generator(snapshot[0])
    a = animate(generator, image, num_frames=8, seeds=[1])
    assert a.shape == (1, 8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a[0, 0], image[0])
    assert np.array_equal(a, animate(generator, image, num_frames=8, seeds=[1]))
    assert not np.array_equal(a, animate(generator, image, num_frames=8, seeds=[2]))


def test_video_depends_on_its_own_seed_only(snapshot, image):
    generator, _ = load_generator(snapshot[0])
    pair = animate(generator, np.concatenate([image, image[:, ::-1]]), seeds=[5, 6])
    alone = animate(generator, image, seeds=[5])
    assert np.array_equal(pair[0], alone[0])


def test_mask_keeps_static_pixels(snapshot, image):
    generator, _ = load_generator(snapshot[0])
    mask = np.zeros((1, 1, 32, 32), np.float32)
    mask[..., :16, :] = 1  # top half may move
    video = animate(generator, image, seeds=[0], mask=mask)
    assert (video[0, :, 16:] == image[0, 16:]).all()
    assert not (video[0, 1:, :16] == image[0, :16]).all()


def test_fit_image_crops_instead_of_squashing():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 14:66] = 255  # a white band a bit wider than the centre square
    out = fit_image(wide, 20)
    assert out.shape == (20, 20, 3) and out.min() >= 250  # squashing would bring the black sides in


def test_bad_paths_are_clear(tmp_path):
    with pytest.raises(VsynError, match="does not exist"):
        load_generator(tmp_path / "nope")
    with pytest.raises(VsynError, match="neither a snapshot nor a run directory"):
        load_generator(tmp_path)


def vsyn(*args):
    return subprocess.run([sys.executable, "-m", "vsyn", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_animate_cli_writes_decodable_video(snapshot, image, tmp_path):
    src = tmp_path / "in.png"
    y, x = np.mgrid[0:64, 0:96]
    smooth = np.stack([x * 2.5, y * 3.5, 128 + 100 * np.sin(x / 9.0)], -1).astype(np.uint8)
    Image.fromarray(smooth).save(src)  # 64x96: resized (short side) and center-cropped to 32x32
    outs = {}
    for seed in (1, 1, 2):
        out = tmp_path / f"out-{seed}-{len(outs)}.mp4"
        proc = vsyn("animate", snapshot[0], src, "-o", out, "--frames", 12, "--seed", seed)
        assert proc.returncode == 0, proc.stderr
        outs.setdefault(seed, []).append(out.read_bytes())
    frames = decode_video(outs[1][0])
    assert frames.shape == (12, 32, 32, 3)
    expected = fit_image(np.asarray(Image.open(src).convert("RGB")), 32)
    mse = np.mean((frames[0].astype(float) - expected) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # frame 0 is the input, up to H.264 loss
    assert outs[1][0] == outs[1][1] and outs[1][0] != outs[2][0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing-ckpt", "in.png", "-o", "o.mp4"], "does not exist"),
        (["CKPT", "missing.png", "-o", "o.mp4"], "image"),
        (["CKPT", "garbage.png", "-o", "o.mp4"], "is not a PNG, JPEG or WebP image"),
        (["CKPT", "in.png", "-o", "o.xyz"], "video format"),
    ],
)
def test_animate_cli_errors_are_one_line(snapshot, tmp_path, args, message):
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    args = [str(snapshot[0]) if a == "CKPT" else (str(tmp_path / a) if "." in a else a) for a in args]
    proc = vsyn("animate", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsyn: error:") and message in lines[0], proc.stderr
