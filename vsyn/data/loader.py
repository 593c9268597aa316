"""``make_loader``: WebDataset shards -> batches of uint8 clips, in a training or an evaluation regime.

Training: every (rank, worker) draws shards at random with replacement from its own seeded stream (so streams are
independent and the run never runs dry), shuffles raw samples in a buffer, and the loader yields a fixed number of
batches per epoch, the same on every rank, so DDP ranks stay in lock-step. With ``disjoint=True`` the readers
instead go through endless passes over the shards, each pass in an order shuffled from the seed (the same for
every reader) and dealt out as in evaluation, so within a pass no sample goes to two (rank, worker) readers.
Evaluation: shards are dealt to (rank, worker) pairs -- or, with fewer shards than readers, samples are dealt by
index -- so one pass yields every readable sample exactly once across all ranks and workers; the last batch may
be short.

Batches: ``video`` uint8 (B,T,3,H,W) (normalise on the device), ``__key__`` list of str, and when every clip has
them ``flow`` float32 (B,T-1,2,H,W) and ``mask`` uint8 (B,H,W). Faults are counted in ``loader.skipped``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vsyn.data.clips import Clip, crop, fit, hflip, window, window_flow
from vsyn.data.decode import decode_flow, decode_mask, decode_video, metadata, num_frames
from vsyn.data.faults import FATAL_KEY, FAULTS_KEY, FaultLog, FaultReport, NothingReadable, NullFaultLog
from vsyn.data.samples import Shard, read_shard
from vsyn.data.urls import resolve, total_samples
from vsyn.errors import VsynError

MODES = ("train", "eval")


def worker_init_fn(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM, SIGUSR2 and SIGINT (a terminal's Ctrl-C reaches them too): the trainer's
    main process handles them (checkpoint, requeue) and then shuts the workers down itself; a worker dying first
    would only turn that into a crash."""
    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): explicit values, else torch.distributed, else the RANK/WORLD_SIZE environment."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass(frozen=True)
class ClipSpec:
    """What one clip of a batch looks like, and how it may be augmented (training only)."""

    frames: int
    stride: int = 1
    size: int | None = None  # size x size: random crops with random_crop (training), else resized (clips.fit)
    flip: bool = True
    random_crop: bool = False
    labels: bool = True  # decode the motion labels (flow, mask) when the shards hold them; training needs none


def _shuffle(samples: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = int(rng.integers(len(buffer)))
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)  # type: ignore[arg-type]
    yield from buffer


def _collate(items: list[tuple[str, Clip]]) -> dict:
    clips = [c for _, c in items]
    batch: dict = {
        "video": torch.from_numpy(np.stack([c.video for c in clips])).permute(0, 1, 4, 2, 3).contiguous(),
        "__key__": [k for k, _ in items],
    }
    if all(c.flow is not None for c in clips):
        batch["flow"] = torch.from_numpy(np.stack([c.flow for c in clips]).astype(np.float32))
    if all(c.mask is not None for c in clips):
        batch["mask"] = torch.from_numpy(np.stack([c.mask for c in clips]).astype(np.uint8))
    return batch


class ClipDataset(IterableDataset):
    """The per-worker pipeline: shards -> raw samples -> clips -> batches, with faults attached to each batch."""

    def __init__(
        self,
        shards: list[Shard],
        spec: ClipSpec,
        *,
        batch_size: int,
        train: bool,
        shuffle_buffer: int,
        seed: int,
        rank: int,
        world_size: int,
        disjoint: bool = False,
    ) -> None:
        self.shards, self.spec, self.batch_size, self.train = shards, spec, batch_size, train
        self.shuffle_buffer, self.seed, self.rank, self.world_size = shuffle_buffer, seed, rank, world_size
        self.disjoint = disjoint

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        faults = FaultLog([s.url for s in self.shards], limit=max(100, 10 * len(self.shards)))
        rng = np.random.default_rng([self.seed, self.rank, worker])
        try:
            reader, readers = self.rank * workers + worker, self.world_size * workers
            if self.train:
                source = self._passes(reader, readers, faults) if self.disjoint else self._resampled(rng, faults)
                raw = _shuffle(source, self.shuffle_buffer, rng)
            else:
                raw = self._dealt(reader, readers, faults, self.shards)
            for batch in self._batches(self._clips(raw, rng if self.train else None, faults)):
                batch[FAULTS_KEY] = faults.drain()
                yield batch
        except NothingReadable as exc:
            yield {FAULTS_KEY: faults.drain(), FATAL_KEY: str(exc)}
            return
        if faults.pending:
            yield {FAULTS_KEY: faults.drain()}

    def _resampled(self, rng: np.random.Generator, faults: FaultLog) -> Iterator[dict]:
        while True:
            yield from read_shard(self.shards[int(rng.integers(len(self.shards)))], faults)

    def _passes(self, reader: int, readers: int, faults: FaultLog) -> Iterator[dict]:
        """Endless passes over the shards, each in its own order (from the seed, so every reader deals the same
        pass), this reader keeping its share of each."""
        for n in itertools.count():
            order = np.random.default_rng([self.seed, n]).permutation(len(self.shards))
            got = 0
            for sample in self._dealt(reader, readers, faults, [self.shards[i] for i in order]):
                got += 1
                yield sample
            if got == 0 and not faults.pending:
                raise NothingReadable(f"a pass over {len(self.shards)} shard(s) left reader {reader} of {readers} "
                                      "(ranks x workers) no sample: fewer samples than readers")

    def _dealt(self, reader: int, readers: int, faults: FaultLog, shards: list[Shard]) -> Iterator[dict]:
        if len(shards) >= readers:
            for shard in shards[reader::readers]:
                yield from read_shard(shard, faults)
            return
        index = 0  # fewer shards than readers: all read everything, each keeps every readers-th sample
        for i, shard in enumerate(shards):
            for sample in read_shard(shard, faults if i % readers == reader else NullFaultLog()):
                if index % readers == reader:
                    yield sample
                index += 1

    def _clips(self, raw: Iterator[dict], rng: np.random.Generator | None, faults: FaultLog) -> Iterator[tuple]:
        shape: tuple | None = None
        for sample in raw:
            try:
                clip = self._clip(sample, rng)
                if shape is None:
                    shape = clip.video.shape
                elif clip.video.shape != shape:
                    raise ValueError(f"clip shape {clip.video.shape} differs from {shape} (pass size= to crop)")
            except Exception as exc:  # an undecodable sample costs the sample
                faults.add(f"{sample['__url__']}#{sample['__key__']}", f"{type(exc).__name__}: {exc}")
                continue
            faults.ok()
            yield sample["__key__"], clip

    def _clip(self, sample: dict, rng: np.random.Generator | None) -> Clip:
        spec = self.spec
        meta = metadata(sample)
        indices = window(num_frames(sample, meta), spec.frames, spec.stride, rng)
        flow = decode_flow(sample) if spec.labels else None
        clip = Clip(
            decode_video(sample, meta, indices),
            window_flow(flow, indices) if flow is not None else None,
            decode_mask(sample) if spec.labels else None,
        )
        if spec.size is not None and clip.video.shape[1:3] != (spec.size, spec.size):
            # random_crop asks for crops (training augmentation); otherwise whole scenes, resized
            clip = crop(clip, spec.size, rng) if spec.random_crop and rng is not None else fit(clip, spec.size)
        if spec.flip and rng is not None and rng.random() < 0.5:
            clip = hflip(clip)
        return clip

    def _batches(self, clips: Iterator[tuple]) -> Iterator[dict]:
        items: list[tuple] = []
        for item in clips:
            items.append(item)
            if len(items) == self.batch_size:
                yield _collate(items)
                items = []
        if items and not self.train:
            yield _collate(items)


class ShardLoader:
    """Iterable of batch dicts. ``skipped`` is the number of skipped shards and samples so far, summed over workers;
    ``len()`` is the batches per epoch (training with a known epoch size only)."""

    def __init__(self, loader: DataLoader, *, train: bool, steps_per_epoch: int | None, urls: list[str]) -> None:
        self._loader, self.train, self.steps_per_epoch, self.urls = loader, train, steps_per_epoch, urls
        self.report = FaultReport()
        self._stream: Iterator[dict] | None = None  # training: one endless stream shared by all epochs

    @property
    def skipped(self) -> int:
        return self.report.skipped

    def __len__(self) -> int:
        if self.steps_per_epoch is None:
            raise TypeError("this training loader is endless: no epoch size (pass epoch_samples or use a manifest)")
        return self.steps_per_epoch

    def _unwrap(self, item: dict) -> dict | None:
        """Book the faults a worker attached; a batch, or None for a faults-only message."""
        self.report.record(item.pop(FAULTS_KEY, []))
        if FATAL_KEY in item:
            raise VsynError(item[FATAL_KEY])
        return item if "video" in item else None

    def __iter__(self) -> Iterator[dict]:
        if not self.train:
            n = 0
            for item in _start(self._loader):
                if (batch := self._unwrap(item)) is not None:
                    n += 1
                    yield batch
            if n == 0 and self.report.skipped:
                bad = ", ".join(f"{u} ({r})" for u, r in list(self.report.first_reason.items())[:5])
                raise VsynError(f"no readable samples in {len(self.urls)} shard(s): {bad}")
            return
        if self._stream is None:
            self._stream = _start(self._loader)
        n = 0
        while self.steps_per_epoch is None or n < self.steps_per_epoch:
            if (batch := self._unwrap(next(self._stream))) is not None:
                n += 1
                yield batch

    def start(self) -> None:
        """Start the training stream's worker processes now (they read ahead), not at the first batch."""
        if self.train and self._stream is None:
            self._stream = _start(self._loader)

    def close(self) -> None:
        """Stop the training stream's worker processes now."""
        stream, self._stream = self._stream, None
        if stream is not None:
            _shutdown(stream)


# Workers ignore SIGTERM (see worker_init_fn), so neither the DataLoader's last resort (`terminate()` on a worker that
# did not stop) nor multiprocessing's exit-time terminate-and-join can end one: a worker left running would hang the
# interpreter's exit for ever. Every worker-backed iterator is therefore tracked: it is shut down the DataLoader's own
# way (a stop message per worker) at exit -- by a hook registered after torch's, so it runs before torch disables
# that -- and any worker still alive after that, or after its iterator was collected, is killed (SIGKILL).
_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()
_WORKERS: list[tuple[weakref.ref, list]] = []  # (iterator, its worker processes)


def _start(loader: DataLoader) -> Iterator[dict]:
    _kill_orphaned_workers()
    iterator = iter(loader)
    if loader.num_workers > 0:
        _LIVE_ITERATORS.add(iterator)
        _WORKERS.append((weakref.ref(iterator), list(getattr(iterator, "_workers", []))))
    return iterator


def _kill(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _kill_orphaned_workers() -> None:
    """Workers whose iterator is gone should have stopped with it; kill those that did not."""
    for entry in [e for e in _WORKERS if e[0]() is None]:
        _kill(entry[1])
        _WORKERS.remove(entry)


def _shutdown(iterator: Iterator[dict]) -> None:
    if hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    for entry in [e for e in _WORKERS if e[0]() is iterator]:
        _kill(entry[1])
        _WORKERS.remove(entry)


@atexit.register
def _shutdown_live_iterators() -> None:
    for iterator in list(_LIVE_ITERATORS):
        _shutdown(iterator)
    for _, processes in _WORKERS:
        _kill(processes)


def make_loader(
    urls: str | os.PathLike | Sequence[str],
    *,
    frames: int,
    batch_size: int,
    mode: str = "train",
    stride: int = 1,
    size: int | None = None,
    flip: bool = True,
    random_crop: bool = False,
    workers: int = 2,
    shuffle_buffer: int = 256,
    seed: int = 0,
    epoch_samples: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    timeout_s: float = 600.0,
    splits: Sequence[str] | None = None,
    disjoint: bool = False,
    labels: bool = True,
) -> ShardLoader:
    """Batches of ``batch_size`` clips of ``frames`` frames from the shards behind ``urls``.

    ``epoch_samples``: clips per epoch over all ranks (training; default: the manifest's count, else endless).
    ``rank``/``world_size``: override torch.distributed/env, e.g. ``0, 1`` to read the same stream on every rank.
    ``timeout_s``: a worker that yields no batch for this long raises instead of hanging the run.
    ``splits``: read the first of these splits a manifest has (``vsyn.data.urls.TRAIN_SPLITS``/``EVAL_SPLITS``);
    None reads what ``urls`` names.
    ``disjoint``: training readers deal passes over the shards instead of resampling them (see the module doc).
    ``labels=False``: skip the motion labels (``flow``, ``mask``) even where the shards hold them: the trainer uses
    none, and at 64 px a procedural clip's flow is larger than its frames.
    """
    if mode not in MODES:
        raise VsynError(f"data mode must be one of {MODES}, not {mode!r}")
    if frames < 1 or batch_size < 1 or stride < 1:
        raise VsynError(f"frames, batch_size and stride must be >= 1 (got {frames}, {batch_size}, {stride})")
    shards = resolve(urls, splits)
    rank, world_size = dist_info(rank, world_size)
    train = mode == "train"
    spec = ClipSpec(frames=frames, stride=stride, size=size, flip=flip, random_crop=random_crop, labels=labels)
    dataset = ClipDataset(
        shards, spec, batch_size=batch_size, train=train, shuffle_buffer=shuffle_buffer if train else 0,
        seed=seed, rank=rank, world_size=world_size, disjoint=disjoint,
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        pin_memory=pin_memory,
        timeout=timeout_s if workers > 0 else 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    epoch_samples = epoch_samples if epoch_samples is not None else total_samples(shards)
    steps = max(1, epoch_samples // (batch_size * world_size)) if train and epoch_samples is not None else None
    return ShardLoader(loader, train=train, steps_per_epoch=steps, urls=[s.url for s in shards])
