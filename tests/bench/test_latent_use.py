"""bench/latent_use.py on untrained motion heads: every column is measured, the encoded-z cosine only where the model
has a motion encoder, and a network without latent noise is refused."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import torch

from vsyn.config import load_config
from vsyn.nn import build_generator

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "latent_use.py"
TINY = ["model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4"]


def _load():
    spec = importlib.util.spec_from_file_location("latent_use", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_columns_and_the_encoded_cosine():
    latent_use = _load()
    torch.manual_seed(0)
    plain = build_generator(load_config("tiny-motion", TINY).model).eval()
    torch.manual_seed(0)
    encoded = build_generator(load_config("tiny-motion", [*TINY, "model.motion_encoder=true"]).model).eval()
    a, b = latent_use.measure(plain, 6, 3, 0), latent_use.measure(encoded, 6, 3, 0)
    assert a["clips"] == b["clips"] > 0
    for r in (a, b):
        assert -1 <= r["cos"] <= r["cos_best"] <= 1 and r["field_spread"] > 0 and 0 <= r["iou"] <= 1
    assert math.isnan(a["cos_encoded"]) and -1 <= b["cos_encoded"] <= 1


def test_a_head_without_latent_noise_is_refused():
    proc = subprocess.run([sys.executable, str(SCRIPT), "init:tiny-cpu", "--n", "2", "--no-record"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a motion head with latent noise" in proc.stderr, proc.stderr[-2000:]
