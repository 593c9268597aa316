"""A short run of bench/serve_soak.py against the shared server, front included: good clients all get their
videos while hostile ones flood, stall, hammer and send junk; no 5xx, no hang, no worker restart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serve_helpers import ROOT

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_short_soak_with_the_front(served, tmp_path) -> None:
    settings, _ = served
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "bench" / "serve_soak.py"), "--run-dir", str(settings.run_dir), "--seconds",
           "12", "--good", "2", "--hostile", "4", "--flood", "60", "--hang-s", "60", "--json", str(out), "--no-record"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.exists(), result.stdout + result.stderr
    r = json.loads(out.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert r["good_ok"] >= 2 and r["good_failed"] == 0, r
    assert r["hostile_5xx"] == 0 and r["hangs"] == 0 and r["worker_restarts"] == 0, r
    assert r["flood_opened"] >= 60 and r["flood_cut"] == r["flood_opened"], r
    answers = r["hostile"]
    assert answers.get("rate 429", 0) > 0 and answers.get("oversize 413", 0) > 0, answers  # the front's refusals
    assert answers.get("expensive 422", 0) > 0 and answers.get("bomb 413", 0) > 0, answers  # the handler's caps
    assert answers.get("slow body cut off", 0) > 0, answers
