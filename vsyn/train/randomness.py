"""Per-step randomness as a pure function of (seed, step), drawn for the global batch and sliced per rank.

Why: a resumed run then needs no RNG bookkeeping to continue exactly, and N ranks see the same numbers as one
process with the same global batch (the DDP == single-process test relies on it). Draws happen on a CPU
generator (tiny tensors: noise, α, frame indices) so CPU and GPU runs share them; the copies to the device are
host-to-device only and never wait for the GPU.
"""

from __future__ import annotations

import numpy as np
import torch


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


class StepRandom:
    def __init__(self, seed: int, step: int, *, rank: int, world: int, local_batch: int, device: torch.device):
        self.gen = torch.Generator().manual_seed(step_seed(seed, step))
        self.step = step
        self.rank, self.world, self.local_batch, self.device = rank, world, local_batch, device

    def _mine(self, t: torch.Tensor) -> torch.Tensor:
        lo = self.rank * self.local_batch
        return t[lo : lo + self.local_batch].to(self.device, non_blocking=True)

    def uniform(self, *sample_shape: int) -> torch.Tensor:
        """U(0,1) of shape (local_batch, *sample_shape): this rank's rows of a global draw."""
        return self._mine(torch.rand((self.local_batch * self.world, *sample_shape), generator=self.gen))

    def noise(self, generator: torch.nn.Module) -> torch.Tensor | None:
        z = generator.sample_noise(self.local_batch * self.world, generator=self.gen)
        return None if z is None else self._mine(z)

    def ramp(self, steps: int) -> torch.Tensor:
        """min(1, step / steps) as a 0-d tensor on the device: a schedule value that is a step input (a static
        buffer under CUDA graphs), not a constant baked into a captured graph."""
        return torch.tensor(min(1.0, self.step / max(1, steps))).to(self.device, non_blocking=True)

    def frame_indices(self, frames: int, k: int) -> torch.Tensor:
        """K distinct non-input frame indices, shared by the batch (as the spatial critic expects)."""
        from vsyn.nn import sample_frame_indices

        return sample_frame_indices(frames, k, generator=self.gen).to(self.device, non_blocking=True)
