"""CUDA-graph replay of a generator for inference: one launch per video batch instead of thousands.

At serving batch sizes the generators are launch-bound (the GRUs unroll over time: ~2,500 kernels per sky128
call, most of them tiny), so a call costs the CPU's launch time, not the GPU's work. `GraphedGenerator` captures
`generator(images, num_frames, noise)` once per (batch bucket, frames, autocast dtype) into a CUDA graph and
replays it: the batch is padded up to the next bucket (1, 2, 4, ... up to `max_batch`) with copies of its first
image, and the padding rows are dropped from the output. Rows never mix (the generators act per video and run in
eval mode), so a video does not depend on its batch mates or bucket: tested against eager on a GPU
(tests/nn/test_graphs.py).

On a CPU, for batches above `max_batch`, or with `enabled=False`, it calls the generator eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    images: Tensor  # static inputs, written before each replay
    noise: Tensor | None
    video: Tensor  # static output, overwritten by each replay


class GraphedGenerator(nn.Module):
    """Wraps a generator (eval mode, no grad) and replays captured CUDA graphs of its forward."""

    def __init__(self, generator: nn.Module, *, max_batch: int = 32, enabled: bool = True, warmup: int = 2):
        super().__init__()
        self.generator = generator.eval()
        self.max_batch, self.warmup = max_batch, warmup
        self.enabled = enabled
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None

    # the surface `vsyn.inference.animate` uses
    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def frames(self) -> int:
        return self.generator.frames

    def sample_noise(self, *args, **kwargs):
        return self.generator.sample_noise(*args, **kwargs)

    def bucket(self, batch: int) -> int:
        """The captured batch size a batch runs at: the next power of two, at most max_batch."""
        return min(1 << (batch - 1).bit_length(), self.max_batch)

    @torch.no_grad()
    def forward(self, images: Tensor, num_frames: int | None = None, noise: Tensor | None = None) -> Tensor:
        batch = images.shape[0]
        if not (self.enabled and images.is_cuda and batch <= self.max_batch):
            return self.generator(images, num_frames=num_frames, noise=noise)
        frames = num_frames or self.generator.frames
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        size = self.bucket(batch)
        key = (size, frames, dtype, noise is None, images.device)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(images, noise, size, frames, dtype)
        _fill(captured.images, images)
        if noise is not None:
            _fill(captured.noise, noise)
        captured.graph.replay()
        return captured.video[:batch].clone()

    def capture_buckets(self, num_frames: int | None, device: torch.device, dtype: torch.dtype | None) -> None:
        """Capture every bucket up to max_batch ahead of time (server start-up), so no client pays for it."""
        r = self.generator.resolution
        for size in sorted({self.bucket(b) for b in range(1, self.max_batch + 1)}):
            images = torch.full((size, 3, r, r), 0.5, device=device)
            noise = self.generator.sample_noise(size, device=device)  # None for generators without latent noise
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                self.forward(images, num_frames=num_frames, noise=noise)

    def _capture(self, images: Tensor, noise: Tensor | None, size: int, frames: int,
                 dtype: torch.dtype | None) -> _Captured:
        static_images = _padded(images, size)
        static_noise = _padded(noise, size) if noise is not None else None
        # autocast's weight-cast cache must not outlive the capture: casts are recorded into the graph instead
        autocast = torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False)
        side = torch.cuda.Stream(device=images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side), autocast:  # warm-up off the capture: cuDNN plans, allocator
            for _ in range(self.warmup):
                self.generator(static_images, num_frames=frames, noise=static_noise)
        torch.cuda.current_stream(images.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool), autocast:
            video = self.generator(static_images, num_frames=frames, noise=static_noise)
        return _Captured(graph, static_images, static_noise, video)


def _padded(t: Tensor, size: int) -> Tensor:
    """A new tensor of `size` rows: t's rows, then copies of its first row."""
    out = t.new_empty((size, *t.shape[1:]))
    _fill(out, t)
    return out


def _fill(static: Tensor, values: Tensor) -> None:
    """Write `values` into the first rows of `static` and copies of its first row into the rest."""
    n = values.shape[0]
    static[:n].copy_(values)
    if n < static.shape[0]:
        static[n:].copy_(values[:1].expand(static.shape[0] - n, *values.shape[1:]))
