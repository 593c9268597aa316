"""The training clip stream with a resumable position: global batches as a function of (seed, step).

A WebDataset pipeline cannot seek, so the position is made recomputable instead: the reader is rebuilt with a
seed derived from (seed, block) every `block_steps` steps, and resuming at step s rebuilds block s // block_steps
and skips s % block_steps batches (a bounded replay). Every rank reads the *global* batch and keeps its slice,
so N ranks see exactly the clips one process would; the price is that each rank decodes the whole global batch,
which is small for this GAN (8 clips by default). With `per_rank=True` (data.reading=per_rank) the factory reads
only this rank's clips (its own shards and seeds, vsyn.data's disjoint passes) and the batch is used whole: the
position is recomputed the same way, per rank, so resuming stays exact; only the equivalence to one process goes.
"""

from __future__ import annotations

import gc
from typing import Any, Callable, Iterable, Iterator

import torch

from vsyn.train.randomness import step_seed

LoaderFactory = Callable[[int], Iterable[dict[str, Any]]]  # seed -> iterable of {"video": uint8 (B,T,3,H,W), ...}

_STREAM_ID = 1  # keeps data seeds apart from the per-step noise seeds


def collect_readers() -> None:
    """Readers may hold reference cycles (a generator over themselves); a DataLoader worker that outlives its
    reader blocks interpreter exit, because the workers ignore SIGTERM (vsyn.data.worker_init_fn) and so
    multiprocessing's exit-time terminate() cannot stop them. Collecting runs the DataLoader iterator's
    __del__, which shuts the workers down gracefully. Call it after dropping every reference to the reader."""
    gc.collect()


class ClipStream:
    def __init__(self, factory: LoaderFactory, *, seed: int, block_steps: int, rank: int, world: int,
                 per_rank: bool = False) -> None:
        self.factory, self.seed, self.block_steps = factory, seed, max(1, block_steps)
        self.rank, self.world, self.per_rank = rank, world, per_rank
        self.step = 0
        self._loader: Iterable[dict[str, Any]] | None = None
        self._it: Iterator[dict[str, Any]] | None = None
        self._block = -1
        self._epoch = 0
        self._skipped_before = 0  # skipped-sample count of loaders already closed

    def _open(self, block: int, epoch: int) -> None:
        self._skipped_before += self._loader_skipped()
        self.close()
        self._block, self._epoch = block, epoch
        self._loader = self.factory(step_seed(self.seed, block, _STREAM_ID + epoch))
        self._it = iter(self._loader)

    def seek(self, step: int) -> None:
        """Position the stream so that the next batch is the one an uninterrupted run would see at `step`."""
        self._open(step // self.block_steps, 0)
        self.step = self._block * self.block_steps
        while self.step < step:
            self._next_global()

    def _next_global(self) -> dict[str, Any]:
        block = self.step // self.block_steps
        if self._it is None or block != self._block:
            self._open(block, 0)
        while True:
            try:
                batch = next(self._it)  # type: ignore[arg-type]
                break
            except StopIteration:  # a finite epoch ran out inside the block: continue with the next sub-seed
                self._open(block, self._epoch + 1)
        self.step += 1
        return batch

    def next(self) -> dict[str, Any]:
        """This rank's share of the next global batch."""
        batch = self._next_global()
        if self.per_rank:
            return batch  # already this rank's own clips
        video = batch["video"]
        n = video.shape[0] // self.world
        if n * self.world != video.shape[0]:
            raise RuntimeError(f"global batch of {video.shape[0]} clips does not split over {self.world} ranks")
        lo = self.rank * n
        b = video.shape[0]

        def per_clip(v: Any) -> bool:  # video, flow, mask, __key__: one entry per clip
            return (torch.is_tensor(v) and v.shape[:1] == (b,)) or (isinstance(v, list) and len(v) == b)

        return {k: (v[lo : lo + n] if per_clip(v) else v) for k, v in batch.items()}

    def _loader_skipped(self) -> int:
        counter = getattr(self._loader, "skipped", 0)
        counter = counter() if callable(counter) else counter
        return int(getattr(counter, "value", counter) or 0)

    @property
    def skipped(self) -> int:
        """Samples the reader dropped (unreadable, too short) since this process started."""
        return self._skipped_before + self._loader_skipped()

    def close(self) -> None:
        """Shut the current reader's workers down now (see collect_readers)."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        had_reader = self._loader is not None
        self._it = self._loader = None
        if had_reader:
            collect_readers()

    def state(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed, "block_steps": self.block_steps,
                "reading": "per_rank" if self.per_rank else "global"}
