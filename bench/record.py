"""What every bench script records beside its table: the commit it measured, and one append-only results file."""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    """Host, CPU model, visible cores, GPU and library versions: enough to tell two rows' machines apart."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    return f"{socket.gethostname()}: {cpu}, {cores} cores, {gpu}; {versions}"


def commit() -> str:
    """Short commit plus a dirty flag; VSYN_COMMIT names it where the tree has no .git (a remote GPU box)."""
    if os.environ.get("VSYN_COMMIT"):
        return os.environ["VSYN_COMMIT"]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    except OSError:
        return "unknown"
    return rev.strip() + (" (uncommitted changes)" if dirty.strip() else "") if rev.strip() else "unknown"


def provenance(load_before: float | None = None) -> list[str]:
    """A report's machine, load (when `load_before` was read at start), commit and command lines."""
    lines = [f"- machine: {machine()}"]
    if load_before is not None:
        lines.append(f"- load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} (shared "
                     "machines: read CPU figures with this in mind)")
    return [*lines, f"- commit: {commit()}", f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`"]


def append_report(report: str) -> Path:
    """Append one report to bench/RESULTS.md (never overwrite: the file is the history of every measurement)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        if f.tell() == 0:
            f.write("# Benchmark results\n\nAppended by the scripts in bench/; newest last.\n\n")
        f.write(report.rstrip("\n") + "\n")
    print(f"appended to {RESULTS}")
    return RESULTS
