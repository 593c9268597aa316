"""A real single-node SLURM for the launcher tests: `slurm/local-cluster start` under a session tmp dir.

Jobs inherit the test process's environment (sbatch exports it), so SLURM_CONF and PYTHONPATH (for the picklable
test tasks in `slurm_tasks.py`) are set for the whole session.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

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


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _packages_missing() -> bool:
    return any(shutil.which(b) is None for b in ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sbatch"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Start the cluster (installing it with apt when needed, as root), yield its env, stop it at the end."""
    if _packages_missing() and os.geteuid() != 0:
        pytest.skip("SLURM packages missing and not root: run `sudo slurm/local-cluster start` once")
    # Not under pytest's tmp dirs: they are 0700 and munged wants every folder above its socket traversable.
    prefix = Path(tempfile.mkdtemp(prefix="vsyn-slurm-"))
    prefix.chmod(0o755)
    ctld, slurmd, dbd, db = _free_ports(4)
    env = {
        **os.environ,
        "SLURM_PREFIX": str(prefix),
        "SLURM_CTLD_PORT": str(ctld),
        "SLURMD_PORT": str(slurmd),
        "SLURM_DBD_PORT": str(dbd),
        "SLURM_DB_PORT": str(db),
    }
    start = subprocess.run([str(LOCAL_CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=600)
    if start.returncode != 0:
        subprocess.run([str(LOCAL_CLUSTER), "purge"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"local-cluster start failed:\n{start.stdout}\n{start.stderr}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(prefix / "etc" / "slurm.conf"))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        mp.setenv("OMP_NUM_THREADS", "1")
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        try:
            yield {**env, "SLURM_CONF": str(prefix / "etc" / "slurm.conf")}
        finally:
            subprocess.run(["scancel", "-u", getpass.getuser()], capture_output=True)  # this cluster's jobs only
            time.sleep(1)
            subprocess.run([str(LOCAL_CLUSTER), "purge"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def shards_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three tiny procedural shards, packed in-process (the job-array test packs the same ones on the cluster)."""
    from slurm_tasks import pack_procedural_shard

    out = tmp_path_factory.mktemp("shards")
    for i in range(3):
        pack_procedural_shard(str(out), i)
    return f"{out}/train-{{000000..000002}}.tar"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
