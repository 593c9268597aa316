"""Encode processes end with their serving worker, even when it is killed outright (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

OWNER = """
import sys
from serve.encode_pool import encode_pool
import numpy as np
from vsyn.video import encode_video

pool = encode_pool(2)
jobs = [pool.submit(encode_video, np.zeros((2, 16, 16, 3), np.uint8)) for _ in range(4)]
assert all(job.result() for job in jobs)
print(" ".join(str(p) for p in pool._processes), flush=True)
sys.stdin.read()  # wait to be killed
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited all the same
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_encode_processes_exit_when_their_worker_is_killed():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        children = [int(p) for p in owner.stdout.readline().split()]
        assert len(children) == 2 and all(_alive(p) for p in children)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in children), "encode processes outlived their worker"
    finally:
        owner.kill()
