"""The README's held-out data blocks, run as written in a scratch folder: packs with val and test splits, `vsyn eval`
reading the held-out split by default and the train split when told, a training run with motion metrics at its
snapshot, and the curves of its metrics in one PNG."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- the two blocks below are run as written by tests/metrics/test_readme_commands.py -->"


def _blocks() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    start = text.index(MARKER)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:], re.S)[:2]
    assert len(blocks) == 2, "README lost its tested blocks"
    return [[line for line in block.replace("\\\n", "").splitlines() if line.strip()] for block in blocks]


@pytest.mark.slow
def test_readme_held_out_blocks(tmp_path, monkeypatch):
    from vsyn.cli import main

    evals, training = _blocks()
    monkeypatch.chdir(tmp_path)
    assert len(evals) == 5 and all(line.startswith("vsyn ") for line in evals)
    for line in evals:  # in process: quick
        assert main(shlex.split(line)[1:]) == 0, line
    copy_val = json.loads(Path("eval/copy-val/metrics.json").read_text())
    true_test = json.loads(Path("eval/true-test/metrics.json").read_text())
    copy_train = json.loads(Path("eval/copy-train/metrics.json").read_text())
    assert copy_val["data"] == "data/proc32/manifest.json#val" and copy_val["frames"] == 9
    assert true_test["data"] == "data/proc32-test/manifest.json#test"
    assert copy_train["data"] == "data/proc32/manifest.json#train"
    assert copy_val["metrics"]["motion_score"] == 1.5 and copy_val["metrics"]["motion_leak"] == 0.0
    assert true_test["metrics"]["motion_speed_ratio"] == 1.0 and true_test["metrics"]["motion_psnr_moving"] == 100.0
    assert copy_train["metrics"]["psnr"] != copy_val["metrics"]["psnr"]  # other clips

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    for line in training:  # subprocesses, as a user runs them
        argv = shlex.split(line)
        argv = [sys.executable, "-m", "vsyn", *argv[1:]] if argv[0] == "vsyn" else \
            [sys.executable, str(REPO / argv[1]), *argv[2:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    records = [json.loads(r) for r in Path("runs/motion/logs/stats.jsonl").read_text().splitlines()]
    metrics = [r for r in records if "metrics/motion_score" in r]
    assert len(metrics) == 1 and 0 <= metrics[0]["metrics/motion_leak"] <= 1
    best = json.loads(Path("runs/motion/checkpoints/best-motion_score/meta.json").read_text())
    assert best["kimg"] == pytest.approx(metrics[0]["kimg"])
    assert Path("curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
