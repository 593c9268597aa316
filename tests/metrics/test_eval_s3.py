"""`vsyn eval` end to end over procedural shards served by the real local S3 server (tests/conftest.py), with a
real tiny checkpoint and with the copy-frame-0 reference; FVD/FID through the same S3 loader with small random
detectors (the published weights cannot be downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vsyn.cli import main
from vsyn.metrics import EvalSettings, evaluate
from vsyn.metrics.evaluate import build_protocols, required_frames
from vsyn.metrics import make_eval_loader
from vsyn.metrics.utils import copy_first_frame

from .helpers import TinyImageDetector, TinyVideoDetector

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def s3_data(s3_server, tmp_path_factory) -> str:
    from shards.remote import upload
    from tests.data.helpers import shards_cli

    out = tmp_path_factory.mktemp("evalshards") / "shards"
    assert shards_cli("pack", "procedural", out, "--clips", 8, "--size", 32, "--frames", 17, "--shard-samples", 4,
                      "--layout", "mp4", "--workers", 1, "--split", "test") == 0
    url = f"s3://{s3_server.bucket}/metrics-eval"
    upload(out, url, workers=1)
    return url + "/manifest.json"


def test_vsyn_eval_copy_frame0_over_s3(s3_data, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "copy-frame0", "--data", s3_data, "--metrics", "psnr,ssim,motion", "--n", "8", "--batch", "4",
               "--resolution", "32", "--frames", "9", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["data"] == s3_data + "#test" and summary["frames"] == 9  # the held-out split, T frames
    assert m["motion_speed_ratio"] == 0.0 and m["motion_leak"] == 0.0 and 10 < m["psnr"] < 100
    assert summary["directions"]["psnr"] == "higher" and summary["directions"]["motion_epe"] == "lower"
    assert summary["directions"]["motion_speed_ratio"] == "closer to 1"
    assert "closer to 1" in capsys.readouterr().out


def test_vsyn_eval_checkpoint_over_s3(s3_data, tmp_path):
    from vsyn.config import load_config
    from vsyn.nn import build_generator
    from vsyn.snapshot import save_snapshot

    cfg = load_config("tiny-cpu")
    gen = build_generator(cfg.model)
    snap = save_snapshot(tmp_path / "ckpt", gen, None, cfg, step=1, kimg=0.001)
    rc = main(["eval", str(snap), "--data", s3_data, "--metrics", "psnr,ssim", "--n", "8", "--batch", "4",
               "--device", "cpu"])
    assert rc == 0
    m = json.loads((snap / "eval" / "metrics.json").read_text())["metrics"]
    assert 0 < m["psnr"] < 100 and -1 <= m["ssim"] <= 1


def test_missing_detector_weights_is_one_clear_error(s3_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VSYN_I3D_PATH", raising=False)
    rc = main(["eval", "copy-frame0", "--data", s3_data, "--metrics", "fvd16", "--n", "8", "--resolution", "32",
               "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 2
    assert "i3d_pretrained_400.pt" in capsys.readouterr().err


def test_feature_metrics_over_s3_loader(s3_data, tmp_path):
    s = EvalSettings(n=8, batch=4, cache_dir=str(tmp_path / "cache"), shared_stream=True,
                     detectors={"i3d-videogpt": TinyVideoDetector(), "inception-fid": TinyImageDetector()},
                     detector_sha256={"i3d-videogpt": "a" * 64, "inception-fid": "b" * 64},
                     protocol_overrides={"resize": "none", "size": 32})
    names = ["fvd16", "fid"]
    need = required_frames(names, build_protocols(names, s), frames=9)
    loader = make_eval_loader(s3_data, frames=need, batch_size=4, size=32, workers=1)
    values, cards = evaluate(copy_first_frame, loader, names, s3_data, s)
    assert values["fvd16"] > 0 and values["fid"] > 0
    assert len(cards["fvd16"].data_digest) == 64 and len(list(Path(s.cache_dir).glob("*.npz"))) == 2
