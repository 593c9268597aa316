"""Checkpoints off the critical path: the state is copied to host memory at the step boundary, and a background
thread writes it in the same layout as `checkpoint.save_checkpoint` (what `Runtime.load` and resume read).

The loop pays only for the copy (device-to-host into pinned memory, one stream sync; on a CPU a clone). The
guarantees of the synchronous path hold:
- atomic: files go to `.tmp-ckpt-<step>`; COMPLETE is written last (after every file's data is fsynced), then
  the directory is renamed into place. A kill mid-write leaves the previous checkpoints complete and a temp dir
  that the next run deletes;
- bit-exact resume: the copy is taken at the same step boundary as before, the RNG states at that moment, and the
  files are written by Accelerate's own `save` with its own file names, so `Accelerator.load_state` reads them;
- preemption: the loop waits for a write in flight before the next save, before it exits (done, or the save
  after SIGTERM/SIGUSR2) and when it fails (`close`), so a requeued job never finds its newest save half-done;
- ranks: under DDP only rank 0 holds the weights and optimizer state it writes; every rank writes its own RNG
  file synchronously (a few kB) before a barrier, so rank 0 marks the directory complete only once they are all
  there. No collective runs in the background.

DeepSpeed keeps the synchronous, collective `save_checkpoint`: every rank writes its ZeRO partition from inside
the engine (flat fp32 partitions and optimizer shards in DeepSpeed's own format), so a host copy would mean
re-implementing that format, and DeepSpeed's own asynchronous engines (FastPersist/decoupled, Nebula) need
libaio or an external service.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vsyn.config import Config
from vsyn.snapshot import write_snapshot
from vsyn.train import checkpoint
from vsyn.train.background import BackgroundWriter
from vsyn.train.ema import GeneratorEMA
from vsyn.train.runtime import Runtime

KIND = "checkpoint"


def to_host(obj: Any, pinned: bool) -> Any:
    """A copy of a (nested dict/list/tuple of) tensors in host memory that later steps cannot change.

    Device tensors are copied asynchronously (into pinned memory when `pinned`); the caller synchronises once.
    Layouts (strides) are kept, so the files match what saving the live tensors writes."""
    if torch.is_tensor(obj):
        t = obj.detach()
        if t.device.type == "cpu":
            return t.clone()
        out = torch.empty_like(t, device="cpu", pin_memory=pinned)
        out.copy_(t, non_blocking=pinned)
        return out
    if isinstance(obj, dict):
        return type(obj)((k, to_host(v, pinned)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v, pinned) for v in obj)
    return obj  # numbers, strings, None: immutable


@dataclass
class HostState:
    """Rank 0's share of a checkpoint, in host memory."""

    model_g: dict[str, torch.Tensor]  # as Accelerate saves them: the prepared (possibly wrapped) module's keys
    optim_g: dict[str, Any]
    model_d: dict[str, torch.Tensor]
    optim_d: dict[str, Any]
    generator: dict[str, torch.Tensor]  # the raw generator and its EMA, for the snapshot files
    generator_ema: dict[str, torch.Tensor]


def _saved_module(acc: Any) -> torch.nn.Module:
    """The module `Accelerator.save_state` saves: the one given to `prepare`, before any DDP wrapping."""
    (model,) = acc._models  # one network per accelerator (runtime.py)
    return model


def capture(rt: Runtime, ema: GeneratorEMA) -> HostState:
    pinned = rt.device.type == "cuda"
    saved_g = _saved_module(rt.acc_g)
    model_g = to_host(rt.acc_g.get_state_dict(saved_g, unwrap=False), pinned)
    state = HostState(
        model_g=model_g,
        optim_g=to_host(rt.opt_g.state_dict(), pinned),
        model_d=to_host(rt.acc_d.get_state_dict(_saved_module(rt.acc_d), unwrap=False), pinned),
        optim_d=to_host(rt.opt_d.state_dict(), pinned),
        # the snapshot's generator: the same tensors when Accelerate saves the raw module (it does under DDP)
        generator=model_g if saved_g is rt.raw_generator else to_host(rt.raw_generator.state_dict(), pinned),
        generator_ema=to_host(ema.model.state_dict(), pinned),
    )
    if pinned:
        torch.cuda.current_stream(rt.device).synchronize()  # the copies are done before the next step writes
    return state


def write_rng_states(rt: Runtime, state_dir: Path) -> None:
    """This rank's RNG files, now, through Accelerate's own writer (no models or optimizers given: only RNG)."""
    from accelerate.checkpointing import save_accelerator_state

    for name, acc in (("g", rt.acc_g), ("d", rt.acc_d)):
        (state_dir / name).mkdir(parents=True, exist_ok=True)
        save_accelerator_state(str(state_dir / name), [], [], [], [], acc.process_index, acc.step)


def write_accelerator_files(state_dir: Path, model: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """The model and optimizer files of `Accelerator.save_state` (one model, one optimizer per accelerator)."""
    from accelerate.utils import SAFE_WEIGHTS_NAME, save
    from accelerate.utils.constants import OPTIMIZER_NAME

    state_dir.mkdir(parents=True, exist_ok=True)
    save(model, state_dir / SAFE_WEIGHTS_NAME, safe_serialization=True)
    save(optim, state_dir / f"{OPTIMIZER_NAME}.bin", safe_serialization=False)


class CheckpointSaver:
    """`save(trainer_state)` at a step boundary (collective, every rank); `close()` before the run ends.

    asynchronous=False, or a DeepSpeed runtime: the synchronous `checkpoint.save_checkpoint`."""

    def __init__(self, rt: Runtime, root: Path, cfg: Config, ema: GeneratorEMA, keep_last: int, *,
                 asynchronous: bool, writer: BackgroundWriter | None = None) -> None:
        self.rt, self.root, self.cfg, self.ema, self.keep_last = rt, root, cfg, ema, keep_last
        self.asynchronous = asynchronous and not rt.use_deepspeed
        self.writer = writer or BackgroundWriter()
        import accelerate.checkpointing  # noqa: F401 - imported here, never first in the writer thread (a fork of
        import accelerate.utils  # noqa: F401 - the reader's workers must not catch a module import half-way)

    def save(self, trainer_state: dict[str, Any]) -> Path:
        if not self.asynchronous:
            return checkpoint.save_checkpoint(self.rt, self.root, self.cfg, self.ema, trainer_state, self.keep_last)
        rt = self.rt
        step, kimg = int(trainer_state["step"]), float(trainer_state["nimg"]) / 1000
        final = self.root / checkpoint.checkpoint_name(step)
        tmp = self.root / f"{checkpoint.TMP_PREFIX}{final.name}"
        if rt.is_main:
            self.writer.wait(KIND)  # the previous write first: it may even be this step's temp dir
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        rt.barrier()
        write_rng_states(rt, tmp / "state")
        host = capture(rt, self.ema) if rt.is_main else None
        rt.barrier()  # every rank's RNG files are in tmp before rank 0 may mark it complete
        if rt.is_main:
            trainer_json = json.dumps(trainer_state, indent=2)

            def write() -> None:
                write_accelerator_files(tmp / "state" / "g", host.model_g, host.optim_g)
                write_accelerator_files(tmp / "state" / "d", host.model_d, host.optim_d)
                write_snapshot(tmp, host.generator, host.generator_ema, self.cfg, step, kimg)
                (tmp / "state" / "trainer.json").write_text(trainer_json)
                checkpoint.commit(tmp, final, self.keep_last, fsync_files=True)

            self.writer.submit(KIND, write)
        return final

    def wait(self) -> None:
        """Block until the checkpoint in flight (if any) is complete on disk."""
        self.writer.wait(KIND)

    def close(self) -> None:
        self.writer.close()
