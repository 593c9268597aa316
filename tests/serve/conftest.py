"""Fixtures for the serving tests: a small checkpoint, its .mar, and one real server (TorchServe behind the real
nginx front) on 127.0.0.1.

The server is started once for the session, on free ports, with every file under pytest's tmp dir and the front's
timeouts and per-client limits shortened so the tests that exercise them stay quick; it is stopped (front drained,
whole process group) even when a test fails. nginx comes from Debian packages (`serve/install-nginx`, run here when
they are missing and we are root, as `slurm/local-cluster` does for SLURM).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from serve_helpers import ROOT, landscape, requires_java, server_settings

from serve.archive import ServingOptions, export
from serve.client import VsynClient
from serve.protocol import Limits
from vsyn.config import load_config

MAX_REQUEST_MIB = 2  # small, so the "huge body" test needs only a few MB
# The shared server's front: short timeouts (the tests wait them out) and per-client limits that the other tests'
# bursts (16 requests at once from 127.0.0.1) stay within, while a test client hammering /ping exceeds them. The
# burst is above the connection limit, so a client can reach its connection limit before its rate limit.
FRONT = dict(header_timeout_s=2.0, body_timeout_s=2.0, idle_timeout_s=3.0, connections_per_client=16,
             rate_per_client=20.0, burst_per_client=24)  # fmt: skip
# The shared .mar's cost cap: the model's 32 px square x 64 frames; 65 frames (or size=input on a wide image) is
# over it, while every other test's request is under it.
MAX_VIDEO_PIXELS = 32 * 32 * 64


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary, installed from Debian packages first when missing (as root)."""
    from serve import front
    from vsyn.errors import VsynError

    try:
        front.js_module()
        return front.nginx_binary()
    except VsynError:
        pass
    if os.geteuid() != 0:
        pytest.skip("nginx (the serving front) missing and not root: run `sudo serve/install-nginx` once")
    result = subprocess.run([str(ROOT / "serve" / "install-nginx")], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"serve/install-nginx failed:\n{result.stdout}\n{result.stderr}")
    front.js_module.cache_clear()
    front.js_module()
    return front.nginx_binary()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of a tiny-cpu model trained for 3 steps by `vsyn.train.run` on panning synthetic landscapes."""
    from vsyn.train import run

    run_dir = tmp_path_factory.mktemp("train") / "run"
    cfg = load_config("tiny-cpu", ["train.max_steps=3", "train.batch=4", f"train.run_dir={run_dir}"])
    m = cfg.model
    scene = torch.from_numpy(landscape(m.resolution, m.resolution)).permute(2, 0, 1)  # (3, H, W) uint8

    def clips(seed: int):
        rng = torch.Generator().manual_seed(seed)
        while True:  # a batch of clips panning the scene by a random speed
            speed = torch.randint(1, 3, (cfg.train.batch,), generator=rng)
            video = torch.stack([torch.stack([scene.roll(int(s) * t, dims=2) for t in range(m.frames)]) for s in speed])
            yield {"video": video}

    assert run(cfg, factory=clips) == 0
    return run_dir


@pytest.fixture(scope="session")
def model_store(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model-store")
    limits = Limits(max_video_pixels=MAX_VIDEO_PIXELS)
    export(checkpoint, store, options=ServingOptions(batch_size=8, max_batch_delay_ms=50, device="cpu", limits=limits))
    return store


@pytest.fixture(scope="session")
def served(model_store: Path, nginx: str, tmp_path_factory: pytest.TempPathFactory):
    """(settings, client) of a running, READY server behind the nginx front, shared by every test of the pytest run."""
    from serve import server

    requires_java()
    run_dir = tmp_path_factory.mktemp("serve-run")
    settings = server_settings(model_store, run_dir, max_request_mib=MAX_REQUEST_MIB, **FRONT)
    try:
        server.start(settings, wait_s=120)
        yield settings, VsynClient(settings)
    finally:
        server.stop(settings, drain_s=5)
