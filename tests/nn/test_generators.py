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


def _motion_generator(**kw) -> StyleRNNGenerator:
    torch.manual_seed(0)
    return StyleRNNGenerator(RES, ch=4, frames=4, style_dim=16, latent_noise=True, noise_dim=8, head="motion",
                             max_speed=1.0, **kw).eval()


def _field_spread(g: StyleRNNGenerator) -> float:
    """RMS over pixels of the velocity's std across 4 latents for one image (0: the noise changes nothing)."""
    with torch.no_grad():
        v = g.motion_fields(_image(1).expand(4, -1, -1, -1), noise=g.sample_noise(4, torch.Generator().manual_seed(1)))
    return v.velocity.std(dim=0).pow(2).mean().sqrt().item()


def test_noise_to_style_reaches_the_head_when_the_recurrent_path_ignores_the_noise():
    """A trained motion head can stop reading z through the coarsest GRU input (its gates saturate); with
    noise_to_style z also shifts the style logits, which modulate every styled conv and the head."""
    plain, styled = _motion_generator(), _motion_generator(noise_to_style=True)
    for g in (plain, styled):  # cut the recurrent path: z no longer enters the GRU input
        torch.nn.init.zeros_(g.noise_proj.weight)
        torch.nn.init.zeros_(g.noise_proj.bias)
    assert _field_spread(plain) == 0.0
    assert _field_spread(styled) > 1e-3
    image, z = _image(2), styled.sample_noise(2)
    with torch.no_grad():  # the style is the sigmoid of the image's logits plus a linear map of z
        logits = styled.style_head[:-1](styled.encoder(image * 2 - 1)[0])
        expected = torch.sigmoid(logits + styled.noise_style(z))
        seen = {}
        hook = styled.to_motion.register_forward_hook(lambda m, args, out: seen.update(style=args[1]))
        styled.motion_fields(image, noise=z)
        hook.remove()
    assert torch.allclose(seen["style"], expected, atol=1e-6)


def test_tanh_gru_seed_starts_every_gru_from_the_squashed_encoder_map(monkeypatch):
    from vsyn.nn.layers import ConvGRU

    g = _motion_generator(gru_seed="tanh")
    seeds, real = [], ConvGRU.forward

    def spy(self, inputs, h0, steps):
        seeds.append(h0)
        return real(self, inputs, h0, steps)

    monkeypatch.setattr(ConvGRU, "forward", spy)
    image = _image(2) * 40  # out of range on purpose: large encoder maps
    with torch.no_grad():
        g.motion_fields(image, noise=g.sample_noise(2))
        feats = g.encoder(image * 2 - 1)
    assert len(seeds) == len(g.grus)
    for h0, feat in zip(seeds, feats):
        assert torch.equal(h0, torch.tanh(feat)) and h0.abs().max() <= 1
    assert feats[0].abs().max() > 1  # the test would be vacuous if the maps were already in range
    with torch.no_grad():  # the style head still reads the encoder's own map, as in the original
        _, style = g._decode(image, 3, g.sample_noise(2))
        assert torch.equal(style, g.style_head(feats[0]))


def test_latent_options_are_validated():
    with pytest.raises(ValueError, match="gru_seed"):
        _motion_generator(gru_seed="sigmoid")
    with pytest.raises(ValueError, match="noise_to_style needs latent_noise"):
        StyleRNNGenerator(RES, ch=4, frames=4, style_dim=16, noise_to_style=True)
