"""Critic contract: output shapes, prepool, spectral norm everywhere, frame sampling, channels_last and bf16."""

import pytest
import torch
from torch import nn

from vsyn.config import ModelConfig
from vsyn.nn import Critics, SpatialCritic, TemporalCritic, build_critics, sample_frame_indices, to_channels_last


def _video(b: int, t: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, t, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("conditional", [True, False])
def test_spatial_critic_scores_each_frame(conditional: bool):
    d = SpatialCritic(32, ch=4, conditional=conditional).eval()  # eval: SN does no power iteration
    video = _video(2, 6, 32)
    scores = d(video[:, 1:4], video[:, 0])
    assert scores.shape == (2, 3)
    alone = d(video[:1, 2:3], video[:1, 0])  # frames are scored independently
    assert torch.allclose(alone[0, 0], scores[0, 1], atol=1e-5)


@pytest.mark.parametrize("prepool, side", [(False, 32), (True, 64)])
def test_temporal_critic_one_score_per_slice(prepool: bool, side: int):
    d = TemporalCritic(side, ch=4, frames=9, prepool=prepool)
    scores = d(_video(2, 9, side))
    assert scores.shape == (2, d.num_slices()) == (2, 2)
    assert d(_video(1, 25, side)).shape == (1, 6)


def test_spectral_norm_on_every_critic_layer():
    critics = build_critics(ModelConfig(resolution=32, frames=9, ch_ds=4, ch_dt=4))
    layers = [m for m in critics.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
    assert len(layers) == 2 * (5 * 3 + 3 + 1)  # per critic: 5 blocks × 3 convs, 3 attention convs, the head
    for layer in layers:
        assert hasattr(layer, "parametrizations") and "weight" in layer.parametrizations, layer


def test_critics_module_runs_both():
    critics = Critics(SpatialCritic(32, ch=4), TemporalCritic(32, ch=4, frames=9))
    idx = sample_frame_indices(9, 4, torch.Generator().manual_seed(0))
    spatial, temporal = critics(_video(2, 9, 32), idx)
    assert spatial.shape == (2, 4) and temporal.shape == (2, 2)


def test_frame_indices_skip_the_input_and_do_not_repeat():
    seen = set()
    for seed in range(50):
        idx = sample_frame_indices(9, 8, torch.Generator().manual_seed(seed))
        assert sorted(idx.tolist()) == list(range(1, 9))
        seen.add(tuple(sample_frame_indices(9, 3, torch.Generator().manual_seed(seed)).tolist()))
    assert len(seen) > 10
    assert torch.equal(
        sample_frame_indices(25, 8, torch.Generator().manual_seed(1)),
        sample_frame_indices(25, 8, torch.Generator().manual_seed(1)),
    )


def test_channels_last_and_bf16_autocast():
    critics = build_critics(ModelConfig(resolution=32, frames=9, ch_ds=4, ch_dt=4)).eval()
    video = _video(2, 9, 32)
    idx = torch.tensor([1, 5, 8])
    with torch.no_grad():
        ref_s, ref_t = critics(video, idx)
        critics_cl = to_channels_last(critics)
        assert critics_cl.temporal.blocks3d[0].conv1.parametrizations.weight.original.is_contiguous(
            memory_format=torch.channels_last_3d
        )
        cl_s, cl_t = critics_cl(video, idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf_s, bf_t = critics_cl(video, idx)
    assert torch.allclose(cl_s, ref_s, atol=1e-4) and torch.allclose(cl_t, ref_t, atol=1e-4)
    assert torch.isfinite(bf_s).all() and torch.isfinite(bf_t).all()
    assert torch.allclose(bf_s.float(), ref_s, rtol=0.1, atol=0.1)


def test_gradient_penalty_backpropagates_through_both_critics():
    """WGAN-GP needs a double backward through SN convs and attention (with γ ≠ 0 so attention is in the graph)."""
    from vsyn import losses

    critics = build_critics(ModelConfig(resolution=32, frames=9, ch_ds=4, ch_dt=4))
    for attn in (critics.spatial.blocks[2], critics.temporal.blocks2d[0]):
        attn.gamma.data.fill_(0.5)
    real, fake = _video(2, 9, 32, seed=1), _video(2, 9, 32, seed=2)
    x_s = losses.interpolate(real[:, 1:4], fake[:, 1:4], batch_dims=2)
    x_t = losses.interpolate(real, fake)
    penalty = losses.gradient_penalty(critics.spatial(x_s, real[:, 0]), x_s, batch_dims=2)
    penalty = penalty + losses.gradient_penalty(critics.temporal(x_t), x_t)
    penalty.backward()
    for attn in (critics.spatial.blocks[2], critics.temporal.blocks2d[0]):
        assert attn.gamma.grad is not None and attn.gamma.grad.abs() > 0
