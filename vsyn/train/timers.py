"""Where the trainer's wall time goes: every second of the loop is charged to one named phase.

The loop calls `clock.switch(phase)` at each phase boundary (no indentation, no context managers): the time since
the previous switch goes to the phase that was running. The phases partition the loop's wall time:

  data        waiting for the next batch (reader, pinned host-to-device copy)
  step        the optimizer steps: launching them, and waiting for the GPU to finish queued work (see `drain`)
  ema         the generator EMA update (host side; its few kernels run on the GPU behind the step)
  checkpoint  copying the state to host memory, and waiting for a background write still in flight
  samples     rendering the sample sheet (its encoding runs in the background)
  metrics     snapshot metrics (collective)
  logging     scalar flushes (one host sync), progress bar, tick lines

Why no sync per phase: on a GPU the host queues work and runs ahead; a synchronise after every step would stop
it preparing the next one and slow the run it measures. Host-side timing is right in both steady states: when
the reader is the bottleneck the host blocks in `data` while the GPU idles; when the GPU is, the host runs ahead
until a sync point, and `drain=True` at those points (before logging, samples, checkpoints, metrics: rare, and the
flush syncs anyway) charges that wait to `step`. On a CPU everything is synchronous and the partition is exact.

Device time of the step is also recorded with CUDA events (no sync; read when the clock is drained), so a run's
ms per step compares directly with bench/train.py's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

PHASES = ("data", "step", "ema", "checkpoint", "samples", "metrics", "logging")
GPU_PHASE = "step"  # where waiting for queued GPU work is charged


class PhaseClock:
    """Cumulative seconds per phase; `interval(name)` gives each consumer (log flush, tick line) its own window."""

    def __init__(self, device: torch.device, phases: tuple[str, ...] = PHASES) -> None:
        self.cuda = device.type == "cuda"
        self.totals = dict.fromkeys(phases, 0.0)
        self.phase: str | None = None
        self.t = time.perf_counter()
        self.steps = 0  # optimizer steps timed by CUDA events (GPU) or counted (CPU)
        self._events: list[tuple[Any, Any]] = []  # (start, end) CUDA events of each step, not yet read
        self._step_event: Any = None
        self.gpu_step_s = 0.0  # device seconds of the steps read so far
        self._marks: dict[str, tuple[dict[str, float], float, int]] = {}

    def _charge(self) -> None:
        now = time.perf_counter()
        if self.phase is not None:
            self.totals[self.phase] += now - self.t
        self.t = now

    def switch(self, phase: str | None, *, drain: bool = False) -> None:
        """Charge the time since the last switch to the running phase, then run `phase` (None: stop the clock).

        drain: first wait for the GPU's queued work and charge that wait to GPU_PHASE."""
        self._charge()
        if drain and self.cuda:
            torch.cuda.synchronize()
            now = time.perf_counter()
            self.totals[GPU_PHASE] += now - self.t
            self.t = now
            self._read_events()
        if self.phase == GPU_PHASE and phase != GPU_PHASE:
            self._end_step()
        if phase == GPU_PHASE and self.phase != GPU_PHASE:
            self._begin_step()
        if phase is not None and phase not in self.totals:
            raise KeyError(f"unknown phase {phase!r}; known: {', '.join(self.totals)}")
        self.phase = phase

    def _begin_step(self) -> None:
        self.steps += 1
        if self.cuda:
            self._step_event = torch.cuda.Event(enable_timing=True)
            self._step_event.record()

    def _end_step(self) -> None:
        if self.cuda and self._step_event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._step_event, end))
            self._step_event = None

    def _read_events(self) -> None:
        """Device time of finished steps (call after a synchronise: every event has completed)."""
        self.gpu_step_s += sum(a.elapsed_time(b) for a, b in self._events) / 1000
        self._events.clear()

    def snapshot(self) -> tuple[dict[str, float], float, int]:
        """(seconds per phase, device seconds of steps, steps), cumulative, the running phase charged up to now."""
        self._charge()
        return dict(self.totals), self.gpu_step_s, self.steps

    def interval(self, name: str) -> "Breakdown":
        """The breakdown since the previous `interval(name)` (or since the clock started)."""
        now = self.snapshot()
        prev = self._marks.get(name, (dict.fromkeys(self.totals, 0.0), 0.0, 0))
        self._marks[name] = now
        seconds = {k: now[0][k] - prev[0][k] for k in self.totals}
        steps = now[2] - prev[2]
        gpu = now[1] - prev[1] if self.cuda else None
        return Breakdown(seconds, steps, gpu)


class Breakdown:
    """Seconds per phase over an interval of `steps` optimizer steps; `gpu_step_s` device time of those steps
    (None on CPU; on a GPU only of the steps whose events were read at the last drain)."""

    def __init__(self, seconds: dict[str, float], steps: int, gpu_step_s: float | None) -> None:
        self.seconds, self.steps, self.gpu_step_s = seconds, steps, gpu_step_s

    @property
    def wall_s(self) -> float:
        return sum(self.seconds.values())

    def shares(self) -> dict[str, float]:
        wall = self.wall_s
        return {k: v / wall if wall > 0 else 0.0 for k, v in self.seconds.items()}

    def scalars(self, clips_per_step: int) -> dict[str, float]:
        """What the loop logs (stats.jsonl, TensorBoard): each phase's share of wall time, the interval's wall
        seconds and clips/s, counting every real clip the steps drew (critic and generator steps alike, as
        bench/train.py counts them), and the step's device ms where measured."""
        out = {f"time/{k}": v for k, v in self.shares().items()}
        out["time/wall_s"] = self.wall_s
        out["time/clips_per_s"] = self.steps * clips_per_step / self.wall_s if self.wall_s > 0 else 0.0
        if self.gpu_step_s is not None and self.steps:
            out["time/gpu_ms_per_step"] = 1000 * self.gpu_step_s / self.steps
        return out

    def line(self) -> str:
        """Compact shares for the tick line, largest first, phases under 0.5% left out."""
        parts = [f"{k} {100 * v:.0f}%" for k, v in sorted(self.shares().items(), key=lambda kv: -kv[1]) if v >= 0.005]
        return "time: " + ", ".join(parts) if parts else ""

    def to_dict(self, clips_per_step: int) -> dict[str, Any]:
        return {"seconds": self.seconds, "wall_s": self.wall_s, "steps": self.steps,
                "clips": self.steps * clips_per_step, "gpu_step_s": self.gpu_step_s}


def write_timing(path: Path, clock: PhaseClock, clips_per_step: int) -> None:
    """The whole run's breakdown (every phase since the loop started, the final save included) as JSON."""
    whole = clock.interval("run")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(whole.to_dict(clips_per_step), indent=2))
    tmp.replace(path)
