"""encode_processes under a real TorchServe: the worker spawns its encode processes, batched requests come back
as valid videos (same seed, same bytes), and no encode process outlives the server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_helpers import FRAMES, RES, assert_video, encode_image, landscape, post, requires_java, server_settings

from serve.archive import ServingOptions, export
from serve.client import VsynClient

pytestmark = pytest.mark.service


def _spawned_pids(run_dir: Path) -> set[int]:
    """Processes started by multiprocessing's spawn from this server (its run dir in their environment): the encode
    pools' children. Other spawned processes on a shared machine are not ours to count."""
    pids, marker = set(), str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"spawn_main" in (proc / "cmdline").read_bytes():
                if marker in (proc / "environ").read_bytes():
                    pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_encode_processes_serve_and_end_with_the_server(checkpoint, tmp_path) -> None:
    from serve import server

    requires_java()
    store = tmp_path / "store"
    export(checkpoint, store, options=ServingOptions(batch_size=4, max_batch_delay_ms=200, device="cpu",
                                                     encode_processes=2))  # fmt: skip
    settings = server_settings(store, tmp_path / "run")
    before = _spawned_pids(settings.run_dir)
    try:
        server.start(settings, wait_s=120)
        client = VsynClient(settings)
        assert len(_spawned_pids(settings.run_dir) - before) >= 2  # the worker's pool was started at initialize
        image = encode_image(landscape())
        with ThreadPoolExecutor(4) as pool:  # four at once: one batch, encoded over both processes
            responses = list(pool.map(lambda s: post(client, "raw", image, seed=s, format="mp4"), [5, 5, 6, 7]))
        for r in responses:
            assert_video(r, "mp4", FRAMES, (RES, RES))
        assert responses[0].content == responses[1].content and responses[0].content != responses[2].content
        assert max(int(r.headers.get("X-Vsyn-Batch-Size", 1)) for r in responses) > 1  # they were batched
    finally:
        server.stop(settings)
    deadline = time.monotonic() + 15
    while _spawned_pids(settings.run_dir) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _spawned_pids(settings.run_dir) - before, "encode processes outlived the server"
