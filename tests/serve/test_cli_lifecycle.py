"""`vsyn export` and `vsyn serve start|status|stop` as a user runs them: separate processes, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import yaml

import pytest
from serve_helpers import free_ports

pytestmark = [pytest.mark.service, pytest.mark.slow]


def vsyn(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(cwd)}
    return subprocess.run([sys.executable, "-m", "vsyn", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=240)  # fmt: skip


def test_export_start_status_stop(checkpoint, tmp_path) -> None:
    store, run = tmp_path / "store", tmp_path / "run"
    bad = vsyn("export", str(checkpoint), "--model-store", str(store), "--encoder-preset", "quick", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown x264 preset 'quick'" in bad.stderr
    out = vsyn("export", str(checkpoint), "--model-store", str(store), "--batch-size", "2", "--encoder-preset",
               "veryfast", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with zipfile.ZipFile(store / "vsyn.mar") as z:  # the worker started below reads this preset
        assert yaml.safe_load(z.read("model-config.yaml"))["handler"]["encoder_preset"] == "veryfast"

    ports = free_ports(5)
    start = ["serve", "start", "--model-store", str(store), "--run-dir", str(run), "--port", str(ports[0]),
             "--management-port", str(ports[1]), "--metrics-port", str(ports[2]), "--grpc-port", str(ports[3]),
             "--grpc-management-port", str(ports[4])]  # fmt: skip
    out = vsyn(*start, cwd=tmp_path)
    try:
        assert out.returncode == 0, out.stderr + out.stdout
        assert (run / "key_file.json").is_file() and (run / "config.properties").is_file()
        assert (run / "logs" / "ts_log.log").is_file()
        assert "x264 preset veryfast" in (run / "logs" / "model_log.log").read_text()  # the worker's start-up line
        assert not (tmp_path / "logs").exists()  # logs in the run dir, not the cwd
        again = vsyn(*start, cwd=tmp_path)
        assert again.returncode == 2 and "already runs" in again.stderr

        status = vsyn("serve", "status", "--run-dir", str(run), cwd=tmp_path)
        assert status.returncode == 0, status.stdout
        report = json.loads(status.stdout)
        assert report["ready"] and report["models"] == {"vsyn": ["READY"]}
        pgid = int((run / "torchserve.pid").read_text())
    finally:
        stop = vsyn("serve", "stop", "--run-dir", str(run), cwd=tmp_path)
    assert stop.returncode == 0 and stop.stdout.strip() == "stopped"
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # the JVM and every worker are gone
    assert not (run / "key_file.json").exists()
    status = vsyn("serve", "status", "--run-dir", str(run), cwd=tmp_path)
    assert status.returncode == 1 and json.loads(status.stdout)["running"] is False
    assert vsyn("serve", "stop", "--run-dir", str(run), cwd=tmp_path).stdout.strip() == "not running"
