"""Fixtures for the serving tests: a small checkpoint, its .mar, and one real TorchServe on 127.0.0.1.

The server is module-scoped, on free ports, with every file under pytest's tmp dir; it is stopped (whole process
group) even when a test fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serve_helpers import server_settings

from serve.archive import ServingOptions, export
from serve.client import VsynClient
from vsyn.config import load_config

MAX_REQUEST_MIB = 2  # small, so the "huge body" test needs only a few MB


def _requires_java() -> None:
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-cpu generator trained for a couple of steps (or randomly initialised until the trainer exists)."""
    from vsyn.nn import build_generator
    from vsyn.snapshot import save_snapshot

    cfg = load_config("tiny-cpu")
    generator = build_generator(cfg.model)
    return save_snapshot(tmp_path_factory.mktemp("ckpt") / "snapshot", generator, generator, cfg, step=0, kimg=0.0)


@pytest.fixture(scope="session")
def model_store(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model-store")
    export(checkpoint, store, options=ServingOptions(batch_size=8, max_batch_delay_ms=50, device="cpu"))
    return store


@pytest.fixture(scope="module")
def served(model_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """(settings, client) of a running, READY server."""
    from serve import server

    _requires_java()
    settings = server_settings(model_store, tmp_path_factory.mktemp("serve-run"), max_request_mib=MAX_REQUEST_MIB)
    try:
        server.start(settings, wait_s=120)
        yield settings, VsynClient(settings)
    finally:
        server.stop(settings)
