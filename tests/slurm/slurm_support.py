"""Constants and helpers shared by the SLURM tests (a plain module: `conftest` is not importable by name safely)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCAL_CLUSTER = REPO / "slurm" / "local-cluster"

# The real trainer, made as small as it goes (32 px is the critics' minimum); a step takes ~1 s on 2 cores.
TINY = [
    "model.frames=4", "model.spatial_frames=2", "model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4",
    "model.style_dim=16", "model.noise_dim=8", "train.batch=2", "train.n_critic=1", "train.sample_kimg=1000",
    "train.snapshot_kimg=0.004",  # a full checkpoint every ~4 steps
    "train.keep_last=10", "data.workers=0", "data.shuffle_buffer=4",
]
MAX_STEPS = 24  # enough steps after the first checkpoint for a requeue to land mid-run


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def node_state() -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def release_requeued(job_id: str) -> None:
    """Skip SLURM's ~120 s requeue hold, but only once a relaunch cannot be refused.

    When the old run is killed, slurmd revokes the job's credential with a timestamp in whole seconds and refuses
    any launch whose credential was issued in that second or earlier ("Job N already killed, do not launch batch
    job": the job ends FAILED, exit 1, without its script running). The 120 s hold exists to avoid exactly that.
    So: wait until the job pends and the node is idle (the kill, and with it the revocation, is done), let the
    clock pass into the next second, then release.
    """
    from launcher.jobs import slurm_state

    wait_for(lambda: slurm_state(job_id).state == "PENDING", 60, "the requeued job to pend")
    wait_for(lambda: node_state() == "idle", 120, "the node to finish the requeued run's clean-up")
    time.sleep(1.0 - time.time() % 1.0 + 0.05)  # into the next whole second after the revocation
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def job_report(job_id: str) -> str:
    """What SLURM says about a job, for assertion messages: `scontrol show job`, then the daemons' log lines that
    name it (a launch refused by slurmd shows only there)."""
    report = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    conf = os.environ.get("SLURM_CONF")
    if conf:
        for name in ("slurmctld.log", "slurmd.log"):
            log = Path(conf).parent.parent / "log" / name
            if log.is_file():
                lines = [line for line in log.read_text(errors="replace").splitlines()
                         if re.search(rf"\b(?:job|JobId=|StepId=)\s?{job_id}\b", line, re.IGNORECASE)]
                report += f"\n--- {name} (lines naming job {job_id}):\n" + "\n".join(lines[-25:])
    return report
