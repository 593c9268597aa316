"""One critic step and one generator step (loss, backward, clip, optimizer step), run eagerly or replayed from
CUDA graphs (`train.cuda_graphs`).

Why graphs: a step is thousands of small kernels (spectral-norm power iterations, autocast casts, the penalty's
double backward, per-frame GRU cells). At 64 px the GPU waits on the host to launch them (profile: 480 ms of host
time against 150 ms of device time per cycle); a captured step is one launch.

How: the first WARMUP_STEPS calls of each phase run eagerly (on a side stream, as capture requires: cuDNN
autotuning, optimizer state, workspaces all happen there) and record which random draws the step makes. The
next call captures the whole step — forward, penalty, backward, clip, `optimizer.step()` — against static input
buffers (the batch and every draw of `StepRandom`, in order) and replays it; each later call copies the batch and
that step's draws into the buffers and replays. The draws stay a function of (seed, step) and come from the same
CPU generator, so a graphed run sees the same numbers as an eager one.

Limits (checked up front): one process, the DDP runtime (no DeepSpeed engines), CUDA, Adam built `capturable`
(vsyn.train.loop.setup does it). The EMA update stays eager: its decay depends on kimg.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from vsyn.config import Config
from vsyn.errors import VsynError
from vsyn.train.loss import VideoGANLoss
from vsyn.train.randomness import StepRandom
from vsyn.train.runtime import Runtime, frozen

log = logging.getLogger("vsyn.train")

WARMUP_STEPS = 2  # eager calls per phase before capture: cuDNN autotuning and Adam's state need one; one spare
Stats = dict[str, Tensor]
StepFn = Callable[[Tensor, Any], Stats]  # (real clips, StepRandom-like) -> detached scalars


def check_cuda_graphs(cfg: Config, device: torch.device, world_size: int) -> None:
    """Refuse configurations the captured step cannot run, before any work is done."""
    t = cfg.train
    if device.type != "cuda":
        raise VsynError("train.cuda_graphs=true needs a CUDA device")
    if t.distributed != "ddp" or world_size != 1:
        raise VsynError("train.cuda_graphs=true runs one process with the ddp runtime (no DeepSpeed, no "
                        f"multi-process DDP); got distributed={t.distributed}, {world_size} processes")
    if t.compile:
        raise VsynError("train.cuda_graphs and train.compile are exclusive: pick one")


# ---- random draws as graph inputs


@dataclass
class _Draw:
    method: str  # StepRandom method name
    args: tuple

    def __str__(self) -> str:
        return f"{self.method}{self.args}"


class _DrawSource:
    """StepRandom's surface (what the loss draws), each call routed to `_draw(method, args)`."""

    def _draw(self, method: str, args: tuple) -> Tensor | None:
        raise NotImplementedError

    def uniform(self, *shape: int) -> Tensor:
        return self._draw("uniform", shape)

    def noise(self, generator: torch.nn.Module) -> Tensor | None:
        return self._draw("noise", (generator,))

    def frame_indices(self, frames: int, k: int) -> Tensor:
        return self._draw("frame_indices", (frames, k))

    def ramp(self, steps: int) -> Tensor:
        return self._draw("ramp", (steps,))


class _RecordingRandom(_DrawSource):
    """Forwards to a StepRandom and notes each draw (method, arguments) in order."""

    def __init__(self, rnd: StepRandom) -> None:
        self.rnd, self.draws, self.values = rnd, [], []

    def _draw(self, method: str, args: tuple) -> Tensor | None:
        value = getattr(self.rnd, method)(*args)
        self.draws.append(_Draw(method, args))
        self.values.append(value)
        return value


class _StaticRandom(_DrawSource):
    """Hands the captured step its input buffers, in the order the eager step drew them; any other order fails."""

    def __init__(self, draws: list[_Draw], buffers: list[Tensor | None]) -> None:
        self.draws, self.buffers, self.pos = draws, buffers, 0

    def _draw(self, method: str, args: tuple) -> Tensor | None:
        if self.pos >= len(self.draws) or self.draws[self.pos] != _Draw(method, args):
            raise VsynError(f"the captured step drew {method}{args} where the eager step drew "
                            f"{self.draws[self.pos] if self.pos < len(self.draws) else 'nothing'}")
        self.pos += 1
        return self.buffers[self.pos - 1]


# ---- one captured phase


class CapturedStep:
    """A step function replayed from one CUDA graph after WARMUP_STEPS eager calls.

    With `capture=False` the step still runs through the static buffers and the recorded draw order, only without
    a graph: the same plumbing, testable on CPU against the plain eager step.
    """

    def __init__(self, fn: StepFn, device: torch.device, *, capture: bool = True, warmup: int = WARMUP_STEPS):
        if warmup < 1:
            raise ValueError("at least one eager call must record the step's draws")
        self.fn, self.device, self.capture, self.warmup = fn, device, capture, warmup
        self.calls = 0
        self.draws: list[_Draw] = []
        self._shapes: list[tuple[torch.Size, torch.dtype] | None] = []  # of the recorded draws (None: no tensor)
        self.real: Tensor | None = None
        self.buffers: list[Tensor | None] = []
        self.graph: torch.cuda.CUDAGraph | None = None
        self.packed: Tensor | None = None  # the step's scalars, stacked (graph output)
        self.keys: list[str] = []
        self.stream = torch.cuda.Stream(device) if capture else None
        self.timings: dict[str, float] = {}  # seconds of each eager warm-up call and of the capture (synchronised)

    def __call__(self, real: Tensor, rnd: StepRandom) -> Stats:
        self.calls += 1
        if self.calls <= self.warmup:
            with self._timed(f"eager {self.calls}"):
                return self._eager(real, rnd)
        if self.real is None:
            self._prepare(real)
        self._fill(real, rnd)
        if self.capture and self.graph is None:
            with self._timed("capture"):
                self._capture()
            log.info("CUDA graph captured after %s", ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        if self.graph is not None:
            self.graph.replay()
            values = self.packed.clone()  # the next replay overwrites the output buffer
        else:
            values = self._packed_step()
        return dict(zip(self.keys, values.unbind()))

    @contextlib.contextmanager
    def _timed(self, name: str):
        """Wall seconds of a warm-up call or the capture, the device synchronised on both sides (warm-up only:
        where the first calls' cuDNN autotuning and the capture spend the start-up time)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = time.perf_counter() - t0

    @contextlib.contextmanager
    def _side_stream(self):
        """Warm-up and capture run on a side stream, ordered after (and before) the caller's stream."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def _eager(self, real: Tensor, rnd: StepRandom) -> Stats:
        recorder = _RecordingRandom(rnd)
        with self._side_stream():
            stats = self.fn(real, recorder)
        self.draws, self.keys = recorder.draws, list(stats)
        self._shapes = [None if v is None else (v.shape, v.dtype) for v in recorder.values]
        return stats

    def _prepare(self, real: Tensor) -> None:
        self.real = torch.empty_like(real)
        self.buffers = [None if s is None else torch.empty(s[0], dtype=s[1], device=self.device) for s in self._shapes]

    def _fill(self, real: Tensor, rnd: StepRandom) -> None:
        """This step's batch and draws into the static buffers (same draw order as recorded)."""
        if real.shape != self.real.shape:
            raise VsynError(f"a captured step needs batches of one shape: {tuple(self.real.shape)}, "
                            f"got {tuple(real.shape)}")
        self.real.copy_(real, non_blocking=True)
        for draw, buf in zip(self.draws, self.buffers):
            value = getattr(rnd, draw.method)(*draw.args)
            if (value is None) != (buf is None):
                raise VsynError(f"{draw.method} returned {'nothing' if value is None else 'a tensor'} this step")
            if buf is not None:
                buf.copy_(value, non_blocking=True)

    def _packed_step(self) -> Tensor:
        stats = self.fn(self.real, _StaticRandom(self.draws, self.buffers))
        if list(stats) != self.keys:
            raise VsynError(f"the step's scalars changed from {self.keys} to {list(stats)}")
        return torch.stack([v.detach().float().reshape(()) for v in stats.values()])

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread keeps running (and allocating) during the capture
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            self.packed = self._packed_step()
        self.graph = graph


# ---- the two phases, as the loop and the benchmark run them


class TrainSteps:
    """`critic(real, rnd, critic_step)` and `generator(real, rnd)`: one optimizer step each, stats returned as
    detached tensors (no host sync).

    mode: "eager"; "graphs" (cfg.train.cuda_graphs: captured and replayed); "static" (the graphs' buffers and
    draw order without capturing: the plumbing of "graphs", runnable and testable on CPU). None: from cfg.
    """

    MODES = ("eager", "graphs", "static")

    def __init__(self, cfg: Config, rt: Runtime, loss: VideoGANLoss, *, mode: str | None = None) -> None:
        self.cfg, self.rt, self.loss = cfg, rt, loss
        self.mode = mode or ("graphs" if cfg.train.cuda_graphs else "eager")
        if self.mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, not {self.mode!r}")
        if self.mode == "graphs":
            check_cuda_graphs(cfg, rt.device, rt.world_size)
        self._captured: dict[str, CapturedStep] = {}

    def warmup_timings(self) -> dict[str, dict[str, float]]:
        """Per captured phase, seconds of its eager warm-up calls and of its capture (empty in eager mode)."""
        return {key: dict(step.timings) for key, step in self._captured.items()}

    def _phase(self, key: str, fn: StepFn) -> CapturedStep:
        if key not in self._captured:
            self._captured[key] = CapturedStep(fn, self.rt.device, capture=self.mode == "graphs")
        return self._captured[key]

    def critic(self, real: Tensor, rnd: StepRandom, critic_step: int) -> Stats:
        if self.mode == "eager":
            return self._critic(real, rnd, critic_step)
        # lazy R1 makes two kinds of critic step, one graph each: critic_step only decides which
        if self._r1_due(critic_step):
            return self._phase("critic+r1", lambda x, r: self._critic(x, r, 0))(real, rnd)
        return self._phase("critic", lambda x, r: self._critic(x, r, 1))(real, rnd)

    def generator(self, real: Tensor, rnd: StepRandom) -> Stats:
        if self.mode == "eager":
            return self._generator(real, rnd)
        return self._phase("generator", self._generator)(real, rnd)

    def _r1_due(self, critic_step: int) -> bool:
        lc = self.cfg.loss
        return lc.kind != "wgan-gp" and lc.r1_gamma > 0 and critic_step % lc.r1_interval == 0

    # the eager steps; the graphs capture exactly these
    def _critic(self, real: Tensor, rnd: Any, critic_step: int) -> Stats:
        d_loss, stats = self.loss.critic_step_loss(real, rnd, critic_step)
        norm = self.rt.step_critics(d_loss)
        if norm is not None:
            stats["D/grad_norm"] = norm
        return stats

    def _generator(self, real: Tensor, rnd: Any) -> Stats:
        # the critics are the raw module and frozen: no ZeRO hooks, no DDP reducer, no critic gradients
        with frozen(self.rt.raw_critics):
            g_loss, stats = self.loss.generator_step_loss(real, rnd)
            norm = self.rt.step_generator(g_loss)
        if norm is not None:
            stats["G/grad_norm"] = norm
        return stats
