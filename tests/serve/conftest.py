"""Fixtures for the serving tests: a small checkpoint, its .mar, and one real TorchServe on 127.0.0.1.

The server is module-scoped, on free ports, with every file under pytest's tmp dir; it is stopped (whole process
group) even when a test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_helpers import landscape, requires_java, server_settings

from serve.archive import ServingOptions, export
from serve.client import VsynClient
from vsyn.config import load_config

MAX_REQUEST_MIB = 2  # small, so the "huge body" test needs only a few MB


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
    export(checkpoint, store, options=ServingOptions(batch_size=8, max_batch_delay_ms=50, device="cpu"))
    return store


@pytest.fixture(scope="module")
def served(model_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """(settings, client) of a running, READY server."""
    from serve import server

    requires_java()
    settings = server_settings(model_store, tmp_path_factory.mktemp("serve-run"), max_request_mib=MAX_REQUEST_MIB)
    try:
        server.start(settings, wait_s=120)
        yield settings, VsynClient(settings)
    finally:
        server.stop(settings)
