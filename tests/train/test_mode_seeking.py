"""loss.motion_diversity: MSGAN's mode-seeking term on the motion head's velocity field.

Checked against a constructed case with a closed form, then for what it is for: a few optimiser steps on the term
alone make two latents of the same photo give different fields, where the untrained head's latent barely matters.
A short training run with it on logs the ratio and keeps the pixel head and odd batches out."""

from __future__ import annotations

import pytest
import torch

from vsyn.config import load_config
from vsyn.errors import VsynError
from vsyn.nn import build_generator
from vsyn.nn.motion import MotionFields
from vsyn.train.loss import DIVERSITY_EPS, mode_seeking
from tests.train.trainkit import read_losses, run_train

TINY = ["model.resolution=32", "model.frames=6", "model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4"]


def test_ratio_and_loss_have_their_closed_form():
    v = torch.zeros(4, 2, 8, 8)
    v[:2, 0], v[2:, 0] = 1.5, -0.5  # |Δv| = 2 on x, 0 on y: mean 1
    noise = torch.zeros(4, 16)
    noise[2:] = 0.25  # mean |Δz| = 0.25
    f = MotionFields(velocity=v, moving=torch.zeros(4, 1, 8, 8), blend=torch.zeros(4, 3, 1, 8, 8),
                     appearance=torch.zeros(4, 3, 3, 8, 8))
    loss, ratio = mode_seeking(f, noise)
    assert ratio.item() == pytest.approx(4.0)
    assert loss.item() == pytest.approx(1 / (4.0 + DIVERSITY_EPS))


def test_the_term_alone_pulls_two_futures_of_a_photo_apart():
    torch.manual_seed(0)
    g = build_generator(load_config("tiny-motion", [*TINY, "model.latent_noise=true"]).model).train()
    photos = torch.rand(2, 3, 32, 32)
    image = torch.cat([photos, photos])
    z = g.sample_noise(4, generator=torch.Generator().manual_seed(1))

    def ratio() -> float:
        with torch.no_grad():
            return mode_seeking(g.motion_fields(image, noise=z), z)[1].item()

    before = ratio()
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        g(image, noise=z)
        mode_seeking(g.last_fields, z)[0].backward()
        opt.step()
    assert ratio() > 3 * before, (before, ratio())


@pytest.mark.parametrize("overrides, message", [
    (["loss.motion_diversity=1"], "model.head=motion only"),  # tiny-cpu: the pixel head
    (["model.head=motion", "model.latent_noise=false", "loss.motion_diversity=1"], "latent_noise"),
    (["model.head=motion", "model.latent_noise=true", "train.batch=3", "loss.motion_diversity=1"], "even"),
    (["model.head=motion", "model.latent_noise=true", "loss.motion_diversity=-1"], ">= 0"),
])
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(VsynError, match=message):
        load_config("tiny-cpu", overrides)


def test_training_with_the_term_logs_its_ratio(tmp_path, shards):
    run = tmp_path / "run"
    run_train(run, shards, "model.head=motion", "model.latent_noise=true", "loss.motion_diversity=1",
              "train.max_steps=6")
    ratios = [s["G/motion_diversity"] for s in read_losses(run).values() if "G/motion_diversity" in s]
    assert ratios and all(r > 0 for r in ratios), ratios
