"""A stand-in trainer with `vsyn.train.run`'s contract, for developing the launcher before the real one exists.

Deterministic, distributed (gloo), checkpoints every 5 steps and on SIGTERM/SIGUSR2 (flag agreed by all ranks),
resumes from the newest complete checkpoint, returns 0 when done and EXIT_REQUEUE after a signal-save.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

EXIT_REQUEUE = 3


def _save(ckpt_dir: Path, step: int, w: torch.Tensor) -> None:
    tmp = ckpt_dir / f".tmp-{step:06d}"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "w": w}, tmp / "state.pt")
    (tmp / "COMPLETE").touch()
    tmp.rename(ckpt_dir / f"step-{step:06d}")


def run(cfg) -> int:  # noqa: ANN001 - vsyn Config
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    flag = {"sig": 0}
    old = {s: signal.signal(s, lambda n, f: flag.__setitem__("sig", n)) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        ckpt_dir = Path(cfg.run_dir) / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        done = sorted(p for p in ckpt_dir.glob("step-*") if (p / "COMPLETE").exists())
        if done:
            state = torch.load(done[-1] / "state.pt")
            step, w = state["step"], state["w"]
            print(f"rank {rank}: resumed from step {step}", flush=True)
        else:
            step, w = 0, torch.zeros(4)
        if os.environ.get("STANDIN_FAIL"):
            raise ValueError("stand-in trainer asked to fail (STANDIN_FAIL)")
        while step < cfg.train.max_steps:
            g = torch.full((4,), float(rank + 1)) * (step + 1)
            if world > 1:
                dist.all_reduce(g)
            w = 0.5 * w + g
            step += 1
            time.sleep(float(os.environ.get("STANDIN_STEP_S", "0.2")))
            stop = torch.tensor([float(flag["sig"])])
            if world > 1:
                dist.all_reduce(stop)
            if stop.item() or step % 5 == 0:
                if rank == 0:
                    _save(ckpt_dir, step, w)
                if world > 1:
                    dist.barrier()
            if stop.item():
                print(f"rank {rank}: saved at step {step} on signal, requeue", flush=True)
                return EXIT_REQUEUE
        if rank == 0:
            torch.save(w, Path(cfg.run_dir) / "final.pt")
            print(f"done at step {step}", flush=True)
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if world > 1:
            dist.destroy_process_group()
