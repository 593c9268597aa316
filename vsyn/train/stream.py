"""The training clip stream with a resumable position: global batches as a function of (seed, step).

A WebDataset pipeline cannot seek, so the position is made recomputable instead: the reader is rebuilt with a
seed derived from (seed, block) every `block_steps` steps, and resuming at step s rebuilds block s // block_steps
and skips s % block_steps batches (a bounded replay). Every rank reads the *global* batch and keeps its slice,
so N ranks see exactly the clips one process would; the price is that each rank decodes the whole global batch,
which is small for this GAN (8 clips by default). With `per_rank=True` (data.reading=per_rank) the factory reads
only this rank's clips (its own shards and seeds, vsyn.data's disjoint passes) and the batch is used whole: the
position is recomputed the same way, per rank, so resuming stays exact; only the equivalence to one process goes.

Block boundaries off the critical path: a new reader's workers take a while to start and fill their queues, and
an old one's take a while to stop (worker start-up, first batch, joins: both used to stall the loop). With `lookahead=k` the next block's
reader is started k steps before its block (its workers read ahead meanwhile; its batches are those it would give
if opened at the boundary), and a finished reader that can stop itself (`close()`, as vsyn.data's does) is stopped
by a background thread.
"""

from __future__ import annotations

import gc
import threading
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
                 per_rank: bool = False, lookahead: int = 0) -> None:
        self.factory, self.seed, self.block_steps = factory, seed, max(1, block_steps)
        self.rank, self.world, self.per_rank = rank, world, per_rank
        self.lookahead = min(max(0, lookahead), self.block_steps - 1)
        self.step = 0
        self._loader: Iterable[dict[str, Any]] | None = None
        self._it: Iterator[dict[str, Any]] | None = None
        self._block = -1
        self._epoch = 0
        self._skipped_before = 0  # skipped-sample count of loaders already closed
        self._ahead: tuple[int, Iterable[dict[str, Any]]] | None = None  # (block, started reader) of the next block
        self._stoppers: list[threading.Thread] = []

    def _reader(self, block: int, epoch: int) -> Iterable[dict[str, Any]]:
        loader = self.factory(step_seed(self.seed, block, _STREAM_ID + epoch))
        if hasattr(loader, "start"):
            loader.start()  # workers up and reading now, not at the first batch
        return loader

    def _open(self, block: int, epoch: int) -> None:
        self._retire()
        self._block, self._epoch = block, epoch
        self._loader = None
        ahead = self._ahead
        if ahead is not None and ahead[0] <= block:  # its block has come (or a seek went past it)
            self._ahead = None
            if ahead[0] == block and epoch == 0:
                self._loader = ahead[1]
            elif hasattr(ahead[1], "close"):
                ahead[1].close()
        if self._loader is None:
            self._loader = self.factory(step_seed(self.seed, block, _STREAM_ID + epoch))
        self._it = iter(self._loader)

    def _retire(self) -> None:
        """Stop the current reader: in a background thread when it can stop itself, else the old way."""
        self._skipped_before += self._loader_skipped()
        loader, it = self._loader, self._it
        self._it = self._loader = None
        if it is not None and hasattr(it, "close"):
            it.close()
        if loader is None:
            return
        if hasattr(loader, "close"):
            self._stoppers = [t for t in self._stoppers if t.is_alive()]
            stopper = threading.Thread(target=loader.close, name="vsyn-reader-stop", daemon=True)
            stopper.start()
            self._stoppers.append(stopper)
        else:
            collect_readers()

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
        if self.lookahead and self.step % self.block_steps == self.block_steps - self.lookahead:
            self._ahead = (block + 1, self._reader(block + 1, 0))
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
        """Shut every reader's workers down now, the one started ahead too (see collect_readers)."""
        self._retire()
        if self._ahead is not None:
            ahead, self._ahead = self._ahead[1], None
            if hasattr(ahead, "close"):
                ahead.close()
        for stopper in self._stoppers:
            stopper.join()
        self._stoppers.clear()
        collect_readers()

    def state(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed, "block_steps": self.block_steps,
                "reading": "per_rank" if self.per_rank else "global"}
