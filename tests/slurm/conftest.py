"""A real single-node SLURM for the launcher tests: `slurm/local-cluster start` under a session tmp dir.

Jobs inherit the test process's environment (sbatch exports it), so SLURM_CONF and PYTHONPATH (for the picklable
test tasks in `slurm_tasks.py`) are set for the whole session.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slurm_support import HERE, LOCAL_CLUSTER
from tests.conftest import free_ports


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
    ctld, slurmd, dbd, db = free_ports(4)
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
