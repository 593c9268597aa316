"""Median timings the bench scripts share: device time from CUDA events on a GPU, wall clock elsewhere."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def timed_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median ms of `fn()`, CUDA events on a GPU (device time), wall clock on a CPU."""
    if device.type != "cuda":
        return wall_ms(fn, repeats)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock ms of `fn()`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)
