"""CUDA-graph replay of the generators (vsyn.graphs) against eager calls. The GPU tests run where CUDA is present
(a GPU host, not CI); on a CPU the wrapper must fall back to the eager generator."""

from __future__ import annotations

import pytest
import torch

from vsyn.config import ModelConfig
from vsyn.graphs import GraphedGenerator
from vsyn.nn import build_generator

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _generator(kind: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(generator=kind, resolution=64, frames=9, ch_g=8, latent_noise=kind == "style_rnn")
    return build_generator(cfg).to(device).eval()


def _inputs(batch: int, g: torch.nn.Module, device: str, seed: int):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.rand(batch, 3, 64, 64, generator=gen).to(device)
    noise = g.sample_noise(batch, generator=gen, device=device)
    return images, noise


def test_cpu_falls_back_to_eager():
    g = _generator("style_rnn", "cpu")
    graphed = GraphedGenerator(g)
    images, noise = _inputs(2, g, "cpu", 0)
    with torch.no_grad():
        assert torch.equal(graphed(images, num_frames=5, noise=noise), g(images, num_frames=5, noise=noise))
    graphed.capture_buckets(5, torch.device("cpu"), None)  # the server's start-up path: eager calls on a CPU
    assert not graphed._graphs


@CUDA
@pytest.mark.parametrize("kind", ["style_rnn", "dvdgan"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_replay_matches_eager(kind, dtype):
    # A capture may pick other cuDNN engines than an eager call (and a padded batch other ones than its own size):
    # under TF32 that alone moves outputs by ~1e-3, so fp32 is compared with TF32 off.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = dtype is not None
    g = _generator(kind, "cuda")
    graphed = GraphedGenerator(g, max_batch=8)
    autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)
    tol = dict(rtol=0, atol=1e-4) if dtype is None else dict(rtol=0, atol=2e-2)
    for batch, seed in [(4, 0), (4, 1), (3, 2), (1, 3), (8, 4)]:  # bucket hits, a padded batch, fresh inputs
        images, noise = _inputs(batch, g, "cuda", seed)
        with torch.no_grad(), autocast:
            got = graphed(images, num_frames=9, noise=noise)
            ref = g(images, num_frames=9, noise=noise)
        assert got.shape == ref.shape == (batch, 9, 3, 64, 64)
        torch.testing.assert_close(got.float(), ref.float(), **tol)
        assert torch.equal(got[:, 0], images.to(got.dtype))  # frame 0 is the input
    assert {k[0] for k in graphed._graphs} == {1, 4, 8}
    # a replay leaves earlier results alone (the output is copied out of the graph's static buffer)
    a_in, a_noise = _inputs(2, g, "cuda", 10)
    b_in, b_noise = _inputs(2, g, "cuda", 11)
    with torch.no_grad(), autocast:
        a = graphed(a_in, num_frames=9, noise=a_noise)
        a_copy = a.clone()
        b = graphed(b_in, num_frames=9, noise=b_noise)
    assert torch.equal(a, a_copy) and not torch.equal(a, b)


@CUDA
@pytest.mark.parametrize("kind", ["style_rnn", "dvdgan"])
def test_channels_last_replay_matches_nchw_eager(kind):
    """The serving option channels_last (NHWC weights, so cuDNN's NHWC kernels and activations) computes the same
    videos as the default layout; fp32 with TF32 off, so only the kernels' summation order differs."""
    from vsyn.nn.layers import to_channels_last

    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    g = _generator(kind, "cuda")
    images, noise = _inputs(4, g, "cuda", 0)
    with torch.no_grad():
        ref = g(images, num_frames=9, noise=noise)
        nhwc = to_channels_last(_generator(kind, "cuda"))
        assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in nhwc.parameters())
        got = GraphedGenerator(nhwc, max_batch=4)(images, num_frames=9, noise=noise)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_static_buffers_are_padded_with_the_first_row():
    from vsyn.graphs import _fill, _padded

    t = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(_padded(t, 4), torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [0.0, 1.0]]))
    static = torch.full((4, 2), -1.0)
    _fill(static, t[1:2])
    assert torch.equal(static, torch.tensor([[2.0, 3.0]] * 4))
