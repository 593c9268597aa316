"""Fixtures of the trainer tests (helpers live in trainkit.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from trainkit import REPO, scratch_env, vsyn_cmd


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 procedural clips, 32 px, 9 frames, in 3 shards, packed by the real packer."""
    out = tmp_path_factory.mktemp("shards") / "procedural"
    cmd = vsyn_cmd("shards", "pack", "procedural", str(out), "--clips", "24", "--size", "32", "--frames", "9",
                   "--shard-samples", "8", "--workers", "1")
    subprocess.run(cmd, cwd=REPO, env=scratch_env(), check=True, capture_output=True, timeout=120)
    return out
