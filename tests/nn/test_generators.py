"""Generator contract: shapes, value range, frame 0 = input, longer roll-outs, reproducible latent noise."""

import pytest
import torch

from vsyn.config import ModelConfig
from vsyn.nn import DVDGANGenerator, StyleRNNGenerator, build_generator
from vsyn.nn.generators import pyramid_depth

RES = 32


def _image(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, RES, RES, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["style_rnn", "dvdgan"])
def generator(request):
    torch.manual_seed(0)
    if request.param == "style_rnn":
        return StyleRNNGenerator(RES, ch=4, frames=5, style_dim=16)
    return DVDGANGenerator(RES, ch=4, frames=5)


def test_sizing_rules():
    assert (pyramid_depth(128, 2, 5), 128 >> pyramid_depth(128, 2, 5)) == (5, 4)
    assert (pyramid_depth(64, 2, 5), pyramid_depth(64, 2, 4)) == (4, 4)
    assert (pyramid_depth(256, 2, 5), 256 >> pyramid_depth(256, 2, 5)) == (5, 8)
    g = StyleRNNGenerator(128, 32)
    assert [gru.hidden_ch for gru in g.grus] == [256, 256, 256, 128, 64]
    assert DVDGANGenerator(128, 32).noise_shape == (256, 8, 8)


def test_shapes_range_and_exact_first_frame(generator):
    image = _image()
    with torch.no_grad():
        video = generator(image)
    assert video.shape == (2, 5, 3, RES, RES)
    assert torch.equal(video[:, 0], image)
    assert video.min() >= 0 and video.max() <= 1
    assert not torch.allclose(video[:, 1], video[:, 0])


def test_more_frames_than_training(generator):
    with torch.no_grad():
        long = generator(_image(1), num_frames=12, noise=generator.sample_noise(1, torch.Generator().manual_seed(3)))
    assert long.shape == (1, 12, 3, RES, RES)


def test_long_rollout_extends_the_short_one():
    """The recurrence is causal: the first frames of a longer roll-out are the shorter roll-out (float64, so batch
    size dependent conv algorithms cannot hide a difference)."""
    g = StyleRNNGenerator(RES, ch=4, frames=4, style_dim=16).double().eval()  # eval: no SN power iteration
    image = _image(1).double()
    with torch.no_grad():
        assert torch.allclose(g(image, num_frames=12)[:, :4], g(image, num_frames=4), rtol=0, atol=1e-12)


def test_style_rnn_without_noise_is_deterministic():
    g = StyleRNNGenerator(RES, ch=4, frames=4, style_dim=16).eval()
    assert g.sample_noise(2) is None
    with torch.no_grad():
        assert torch.equal(g(_image()), g(_image()))


def test_latent_noise_seeds():
    torch.manual_seed(0)
    g = StyleRNNGenerator(RES, ch=4, frames=4, style_dim=16, latent_noise=True, noise_dim=8).eval()
    image = _image()

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return g(image, noise=g.sample_noise(2, torch.Generator().manual_seed(seed)))

    a, a2, b = run(1), run(1), run(2)
    assert torch.equal(a, a2)
    assert (a[:, 1:] - b[:, 1:]).abs().mean() > 1e-3
    assert torch.equal(a[:, 0], b[:, 0])


def test_dvdgan_noise_seeds():
    torch.manual_seed(0)
    g = DVDGANGenerator(RES, ch=4, frames=4)
    noise = g.sample_noise(2, torch.Generator().manual_seed(5))
    assert noise.shape == (2, 32, 2, 2)
    assert torch.equal(noise, g.sample_noise(2, torch.Generator().manual_seed(5)))
    with torch.no_grad():
        assert not torch.allclose(g(_image(), noise=noise), g(_image(), noise=g.sample_noise(2)))


def test_backward_reaches_every_parameter(generator):
    generator.zero_grad()
    generator(_image(), noise=generator.sample_noise(2)).square().mean().backward()
    missing = [n for n, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("kind, cls", [("style_rnn", StyleRNNGenerator), ("dvdgan", DVDGANGenerator)])
def test_build_generator(kind, cls):
    cfg = ModelConfig(generator=kind, resolution=32, frames=6, ch_g=4, latent_noise=True, noise_dim=8)
    g = build_generator(cfg)
    assert isinstance(g, cls) and g.frames == 6 and g.resolution == 32
    if kind == "style_rnn":
        assert g.sample_noise(3).shape == (3, 8)
