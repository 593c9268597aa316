"""Parameter counts at the original's configurations match method.md within 1%.

Convention: the method doc counts spectral-norm u/v vectors as parameters (the original's custom SN stored them as
non-trainable parameters). torch's parametrization keeps u, v as buffers, so the doc's numbers are compared with
`count_params(m, with_sn_vectors=True)`; the trainable count differs from it by exactly the u/v sizes.
"""

import pytest
import torch
from torch import nn

from vsyn.nn import (
    DVDGANGenerator,
    SpatialCritic,
    StyleRNNGenerator,
    TemporalCritic,
    count_params,
    sn_vector_count,
)

CASES = {
    "style_rnn-128-ch32": (lambda: StyleRNNGenerator(128, 32), 21.21e6),
    "style_rnn-64-ch16": (lambda: StyleRNNGenerator(64, 16), 3.88e6),
    "dvdgan-128-ch32": (lambda: DVDGANGenerator(128, 32), 15.4e6),
    "dvdgan-64-ch16": (lambda: DVDGANGenerator(64, 16), 3.87e6),
    "spatial-128-ch16": (lambda: SpatialCritic(128, 16), 2.48e6),
    "spatial-64-ch32": (lambda: SpatialCritic(64, 32), 9.89e6),
    "temporal-128-ch64": (lambda: TemporalCritic(128, 64), 41.57e6),
    "temporal-64-ch32": (lambda: TemporalCritic(64, 32), 10.41e6),
}


def _sn_uv_sizes(model: nn.Module) -> int:
    """u has one entry per output unit, v one per input unit of the (out, in·k…) weight matrix."""
    total = 0
    for module in model.modules():
        if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
            out_units, *rest = module.parametrizations.weight.original.shape
            total += out_units + int(torch.tensor(rest).prod())
    return total


@pytest.mark.parametrize("name", list(CASES))
def test_param_count_matches_method_doc(name: str):
    build, doc = CASES[name]
    model = build()
    trainable = count_params(model)
    with_sn = count_params(model, with_sn_vectors=True)
    assert abs(with_sn / doc - 1) < 0.01, f"{name}: {with_sn} vs doc {doc:.0f}"
    assert with_sn - trainable == sn_vector_count(model) == _sn_uv_sizes(model) > 0
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_exact_counts_of_the_original_128px_setup():
    """Exact figures, so an accidental layer change shows up even when it stays inside the 1% band."""
    g, ds, dt = StyleRNNGenerator(128, 32), SpatialCritic(128, 16), TemporalCritic(128, 64)
    assert count_params(g, with_sn_vectors=True) == 21_206_622
    assert count_params(ds, with_sn_vectors=True) == 2_482_431
    assert count_params(dt, with_sn_vectors=True) == 41_571_159


def test_latent_noise_only_adds_its_projection():
    plain, noisy = StyleRNNGenerator(64, 16), StyleRNNGenerator(64, 16, latent_noise=True, noise_dim=8)
    assert count_params(noisy) - count_params(plain) == count_params(noisy.noise_proj)


def test_noise_to_style_only_adds_its_linear_map():
    noisy = StyleRNNGenerator(64, 16, latent_noise=True, noise_dim=8)
    styled = StyleRNNGenerator(64, 16, latent_noise=True, noise_dim=8, noise_to_style=True)
    assert count_params(styled) - count_params(noisy) == 8 * 256 + 256  # Linear(noise_dim -> style_dim)
    assert count_params(StyleRNNGenerator(64, 16, gru_seed="tanh")) == count_params(StyleRNNGenerator(64, 16))
