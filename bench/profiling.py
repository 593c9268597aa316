"""One call under torch.profiler, written as the tables the bench scripts share (bench/train.py, bench/generate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch


def profile_to(path: Path, fn: Callable[[], object], device: torch.device) -> str:
    """Profile one `fn()` and write three tables to `path`; returns the first (ops by total time).

    The ops by total device (or CPU) time, the kernels themselves by self time, and the ops by input shape: which
    layer the time goes to.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70)
    kernels = prof.key_averages().table(sort_by="self_" + key, row_limit=40, max_name_column_width=90)
    shapes = prof.key_averages(group_by_input_shape=True).table(
        sort_by=key, row_limit=60, max_name_column_width=40, max_shapes_column_width=110)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{table}\n\n# by self time\n{kernels}\n\n# by input shape\n{shapes}\n")
    return table
