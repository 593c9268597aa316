"""Shared pieces of the trainer tests: tiny shards, tiny configs, subprocess runs, reading the per-step losses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# 32 px, 9 frames, 4 channels: the smallest networks the critics accept; 4 clips per batch.
TINY = [
    "model.resolution=32", "model.frames=9", "model.spatial_frames=4",
    "model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4",
    "train.batch=4", "train.log_every=1", "train.tick_kimg=0", "train.sample_kimg=0", "train.total_kimg=1000",
    "data.shuffle_buffer=16",
]


def scratch_env(**extra: str) -> dict[str, str]:
    """Project-local scratch (DeepSpeed JIT, torchelastic) and one thread, so runs are comparable bit for bit."""
    env = dict(os.environ)
    env.setdefault("TMPDIR", str(REPO / ".tmp"))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED"):
        if key not in extra:
            env.pop(key, None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(run_dir: Path, shards: Path, *extra: str) -> list[str]:
    return ["train", "tiny-cpu", f"data.train={shards}", f"train.run_dir={run_dir}", *TINY, *extra]


def vsyn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vsyn", *args]


def run_train(run_dir: Path, shards: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 240,
              launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher + ["-m", "vsyn"] + train_args(run_dir, shards, *extra)) if launcher else \
        vsyn_cmd(*train_args(run_dir, shards, *extra))
    proc = subprocess.run(cmd, cwd=REPO, env=env or scratch_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 3):
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_losses(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> the scalars logged for it (records of one step merge, the last value wins, as after a resume;
    snapshot metrics add `metrics/<name>` keys to the step that ended before the snapshot), without the loop's
    wall-time breakdown (`time/*`: measured, so different in every run; read_times has them)."""
    return {step: {k: v for k, v in rec.items() if not k.startswith("time/")} for step, rec in _records(run_dir).items()}


def read_times(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> the `time/*` scalars logged with it (the steps that end a logging interval)."""
    out = {step: {k: v for k, v in rec.items() if k.startswith("time/")} for step, rec in _records(run_dir).items()}
    return {step: rec for step, rec in out.items() if rec}


def _records(run_dir: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for line in (run_dir / "logs" / "stats.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec.pop("step"), {}).update(rec)
    return out
