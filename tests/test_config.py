"""Config loading: presets, overrides, and one clear error for every bad key or value."""

import json
import subprocess
import sys

import pytest

from vsyn.config import Config, config_from_dict, load_config, preset_names
from vsyn.errors import VsynError


def test_presets_ship_with_the_package():
    assert {"tiny-cpu", "sky128", "bair64"} <= set(preset_names())


def test_sky128_is_the_originals_setup():
    cfg = load_config("sky128")
    m = cfg.model
    assert (m.resolution, m.frames, m.ch_g, m.ch_ds, m.ch_dt, m.spatial_frames) == (128, 25, 32, 16, 64, 8)
    assert (cfg.loss.kind, cfg.loss.gp_weight, cfg.loss.spatial_weight, cfg.loss.temporal_weight) == ("wgan-gp", 1, 1, 5)
    assert (cfg.optim.lr_g, cfg.optim.betas, cfg.optim.clip_g, cfg.train.n_critic) == (3e-4, (0.5, 0.999), 2.5, 2)


def test_overrides_are_typed():
    cfg = load_config("tiny-cpu", ["train.batch=4", "model.latent_noise=false", "optim.betas=[0.0,0.99]", "name=x"])
    assert cfg.train.batch == 4 and cfg.model.latent_noise is False and cfg.optim.betas == (0.0, 0.99)
    assert cfg.name == "x" and str(cfg.run_dir) == "runs/x"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.bogus=1", "unknown config key 'train.bogus'"),
        ("train.batch=abc", "config key 'train.batch'"),
        ("train=3", "is a section"),
        ("loss.kind=l2", "loss.kind must be"),
        ("model.resolution=100", "power of two"),
        ("nokey", "not key=value"),
        ("model.gru_seed=sigmoid", "model.gru_seed must be features or tanh"),
        ("eval.best_metric=motion_seed_spread", "has no better direction"),
        ("eval.best_metric=motion_floor_epe", "describes the data"),
        ("eval.best_metric=fvd", "unknown metric 'fvd'"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(VsynError, match=message):
        load_config("tiny-cpu", [override])


@pytest.mark.parametrize("overrides", [["model.latent_noise=false", "model.noise_to_style=true"],
                                       ["model.generator=dvdgan", "model.noise_to_style=true"]])
def test_noise_to_style_needs_the_style_generators_latent(overrides):
    with pytest.raises(VsynError, match="model.noise_to_style needs model.latent_noise=true"):
        load_config("tiny-cpu", overrides)


def test_json_round_trip(tmp_path):
    cfg = load_config("bair64", ["train.seed=7"])
    cfg.save(tmp_path / "config.json")
    again = config_from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert again == cfg
    assert load_config(str(tmp_path)) == cfg  # a directory holding config.json is a valid source


def test_unknown_source_is_one_line_error_on_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "vsyn", "info", "no-such-config"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("vsyn: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_default_config_is_valid():
    assert isinstance(config_from_dict(Config().to_dict()), Config)
