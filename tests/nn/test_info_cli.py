"""`vsyn info` end to end through the installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

VSYN = str(Path(sys.executable).with_name("vsyn"))


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core machine: avoid OpenMP spin-waiting
    return subprocess.run([VSYN, "info", *args], capture_output=True, text=True, timeout=120, env=env)


def test_info_json_counts_for_sky128():
    proc = _run("sky128", "--json")
    assert proc.returncode == 0, proc.stderr
    nets = json.loads(proc.stdout)["networks"]
    assert nets["generator"]["params"] == 21_206_563
    assert nets["spatial_critic"]["params"] == 2_468_210
    assert nets["temporal_critic"]["params"] == 41_505_218
    assert nets["temporal_critic"]["params_with_sn_vectors"] == 41_571_159
    assert all(isinstance(n["params"], int) for n in nets.values())


def test_info_reads_a_run_dir(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x", "model": {"generator": "dvdgan", "ch_g": 16}}))
    proc = _run(str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["networks"]["generator"]["class"] == "DVDGANGenerator"


def test_info_bad_input_is_one_line_and_exit_2(tmp_path: Path):
    for source in ("no-such-preset",):
        proc = _run(source)
        assert proc.returncode == 2
        assert proc.stderr.startswith("vsyn: error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
