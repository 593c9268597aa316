"""The distributed runtime: every difference between one process, Accelerate DDP and DeepSpeed lives here.

The loop sees one `Runtime` with the same methods whatever runs underneath: wrapped networks for the forwards
whose gradients must be synchronised, raw modules for the rest, `step_generator` / `step_critics` that run one
backward and one optimizer step, collectives for agreeing on flags and averaging logged scalars, and
collective full-state save/load.

Two Accelerators, one per network: DeepSpeed needs one engine per model (Accelerate's multi-plugin support),
and keeping the split under DDP too gives both paths the same shape and separate state directories.

DeepSpeed with a GAN (../shared/notes.md), each point handled here or by the loop's use of this class:
- the gradient penalty and the generator loss must not go through the critic *engine* (they crash it):
  the loop uses `raw_critics` for both;
- the critics are frozen during the generator step (else their ZeRO hooks fire in G's backward): the loop does
  it with `frozen(raw_critics)`;
- one backward per engine step (ZeRO-2 keeps only the last): `step_critics` takes one summed scalar;
- gradient clipping silently defaults to 1.0 and `"auto"` bucket sizes need a HF model config: the DeepSpeed
  config is written out in full here (`deepspeed_config`), from `cfg.optim.clip_*`;
- the second plugin needs `train_micro_batch_size_per_gpu`: both configs set it;
- both accelerators' `save_state` write the same file names: G and D get separate directories; DeepSpeed
  saves are collective, so every rank calls `save`;
- Accelerate's DeepSpeed path imports `transformers`: checked up front with a clear error;
- without a launcher DeepSpeed looks for MPI: single-process runs get RANK/WORLD_SIZE/... defaults;
- (found here) DeepSpeed's initial parameter broadcast fails on 0-dim parameters: the networks have none.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from vsyn.config import Config
from vsyn.errors import VsynError

BUCKET_BYTES = 200_000_000  # integers: "auto" needs model.config.hidden_size, which a GAN does not have


def deepspeed_config(stage: int, micro_batch: int, world: int, clip: float) -> dict[str, Any]:
    """A complete DeepSpeed config: nothing left for Accelerate to fill in with a surprising default."""
    if stage not in (0, 1, 2):
        raise VsynError(f"train.zero_stage must be 0, 1 or 2 (ZeRO-3 with double backward is untested), not {stage}")
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(clip),  # Accelerate/DeepSpeed default to 1.0 when unset
        "zero_optimization": {
            "stage": stage,
            "reduce_bucket_size": BUCKET_BYTES,
            "allgather_bucket_size": BUCKET_BYTES,
            "overlap_comm": False,
            "contiguous_gradients": True,
        },
        # Precision is torch.autocast around the forwards (see Runtime.autocast): fp32 master weights and the
        # same numerics as the DDP path. DeepSpeed's own bf16 mode would cast the parameters themselves.
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def require_deepspeed() -> None:
    """Accelerate's DeepSpeed path needs deepspeed *and* transformers, even for plain nn.Modules."""
    missing = [name for name in ("deepspeed", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise VsynError(
            f"train.distributed=deepspeed needs {' and '.join(missing)} (Accelerate's DeepSpeed path imports "
            "transformers even for plain modules): pip install 'vsyn[deepspeed]'"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_launch_env() -> None:
    """Let `vsyn train ... train.distributed=deepspeed` run as one process without torchrun or MPI."""
    if "RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_rank_batch(batch: int, world: int) -> int:
    if batch % world:
        raise VsynError(f"train.batch={batch} is not divisible by the {world} processes")
    return batch // world



@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """requires_grad off for the duration: no gradient (and no DeepSpeed hook) for a network that is not stepping."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


@dataclass
class Runtime:
    acc_g: Any  # accelerate.Accelerator for the generator (also owns trackers)
    acc_d: Any  # accelerate.Accelerator for the critics
    generator: nn.Module  # wrapped: DDP module or DeepSpeed engine
    critics: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    use_deepspeed: bool
    clip_g: float
    clip_d: float
    bf16: bool

    # ---- who and where
    @property
    def device(self) -> torch.device:
        return self.acc_g.device

    @property
    def rank(self) -> int:
        return self.acc_g.process_index

    @property
    def world_size(self) -> int:
        return self.acc_g.num_processes

    @property
    def is_main(self) -> bool:
        return self.acc_g.is_main_process

    @property
    def raw_generator(self) -> nn.Module:
        return self.acc_g.unwrap_model(self.generator, keep_torch_compile=True)

    @property
    def raw_critics(self) -> nn.Module:
        """The critic module without DDP/engine: penalty forwards and the generator step go through this."""
        return self.acc_d.unwrap_model(self.critics, keep_torch_compile=True)

    def autocast(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        """bf16 autocast around forwards (weights stay fp32); `enabled=False` for penalties kept in fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16 and enabled)

    # ---- optimizer steps: exactly one backward per step
    def _step(self, acc: Any, model: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, clip: float):
        acc.backward(loss)  # DeepSpeed: engine.backward + engine.step (clipping from the config)
        norm = None if self.use_deepspeed else acc.clip_grad_norm_(model.parameters(), clip)
        opt.step()  # no-op under DeepSpeed
        opt.zero_grad(set_to_none=True)
        return norm

    def step_generator(self, loss: torch.Tensor) -> torch.Tensor | None:
        """Backward and step G; returns the pre-clip gradient norm as a tensor (no host sync), None under DeepSpeed."""
        return self._step(self.acc_g, self.generator, self.opt_g, loss, self.clip_g)

    def step_critics(self, loss: torch.Tensor) -> torch.Tensor | None:
        """`loss` must already hold D-real, D-fake and the penalty: ZeRO-2 keeps only the last backward's grads."""
        return self._step(self.acc_d, self.critics, self.opt_d, loss, self.clip_d)

    # ---- collectives (call on every rank)
    def agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any: all ranks take the same branch (save, stop)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average over ranks: every rank's losses are means over its equal share of the global batch."""
        if self.world_size == 1:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world_size

    def barrier(self) -> None:
        self.acc_g.wait_for_everyone()

    def save(self, directory: Path) -> None:
        """Networks, optimizers and every rank's RNG; collective (DeepSpeed engines save shards on each rank)."""
        self.acc_g.save_state(str(directory / "g"))
        self.acc_d.save_state(str(directory / "d"))

    def load(self, directory: Path) -> None:
        self.acc_g.load_state(str(directory / "g"))
        self.acc_d.load_state(str(directory / "d"))

    def end(self) -> None:
        """Close trackers and the process group: a gloo rank may abort at exit otherwise (notes.md)."""
        self.acc_g.end_training()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        from accelerate.state import AcceleratorState, GradientState, PartialState

        # Let the next run in this process (tests, notebooks) start from a clean slate.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()


def build_runtime(
    cfg: Config,
    generator: nn.Module,
    critics: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    log_dir: Path | None,
) -> Runtime:
    """Wrap both networks and optimizers for `cfg.train.distributed` (ddp or deepspeed)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    t = cfg.train
    cpu = not torch.cuda.is_available()
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per saved file otherwise
    names = [n.strip() for n in t.trackers.split(",") if n.strip()]
    trackers: dict[str, Any] = {"log_with": names, "project_dir": str(log_dir)} if log_dir and names else {}
    use_deepspeed = t.distributed == "deepspeed"
    if use_deepspeed:
        require_deepspeed()
        from accelerate.utils import DeepSpeedPlugin

        _default_launch_env()
        # On CPU, DeepSpeed only runs with these three: the env switch, cpu=False, and gloo.
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        world = world_size_from_env()
        micro = per_rank_batch(t.batch, world)
        plugins = {
            "G": DeepSpeedPlugin(hf_ds_config=deepspeed_config(t.zero_stage, micro, world, cfg.optim.clip_g)),
            "D": DeepSpeedPlugin(hf_ds_config=deepspeed_config(t.zero_stage, micro, world, cfg.optim.clip_d)),
        }
        kwargs = [InitProcessGroupKwargs(backend="gloo")] if cpu else []
        acc_g = Accelerator(deepspeed_plugins=plugins, kwargs_handlers=kwargs, **trackers)
        acc_d = Accelerator()
        acc_g.state.select_deepspeed_plugin("G")
        generator, opt_g = acc_g.prepare(generator, opt_g)
        acc_d.state.select_deepspeed_plugin("D")
        critics, opt_d = acc_d.prepare(critics, opt_d)
    else:
        per_rank_batch(t.batch, world_size_from_env())
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)  # spectral-norm vectors evolve identically
        acc_g = Accelerator(cpu=cpu, kwargs_handlers=[ddp], **trackers)
        acc_d = Accelerator(cpu=cpu, kwargs_handlers=[ddp])
        generator, opt_g = acc_g.prepare(generator, opt_g)
        critics, opt_d = acc_d.prepare(critics, opt_d)
    return Runtime(
        acc_g=acc_g,
        acc_d=acc_d,
        generator=generator,
        critics=critics,
        opt_g=opt_g,
        opt_d=opt_d,
        use_deepspeed=use_deepspeed,
        clip_g=cfg.optim.clip_g,
        clip_d=cfg.optim.clip_d,
        bf16=t.precision == "bf16",
    )
