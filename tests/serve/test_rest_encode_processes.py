"""encode_processes under a real TorchServe: the worker spawns its encode processes, batched requests come back
as valid videos (same seed, same bytes), and no encode process outlives the server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from serve_helpers import encode_image, landscape, requires_java, server_settings

from serve.archive import ServingOptions, export
from serve.client import VsynClient

pytestmark = pytest.mark.service


def _spawned_pids() -> set[int]:
    """Processes started by multiprocessing's spawn (the encode pools' children among them)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"spawn_main" in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def test_encode_processes_serve_and_end_with_the_server(checkpoint, tmp_path) -> None:
    from serve import server
    from vsyn.video import decode_video

    requires_java()
    store = tmp_path / "store"
    export(checkpoint, store, options=ServingOptions(batch_size=4, max_batch_delay_ms=200, device="cpu",
                                                     encode_processes=2))  # fmt: skip
    before = _spawned_pids()
    settings = server_settings(store, tmp_path / "run")
    try:
        server.start(settings, wait_s=120)
        client = VsynClient(settings)
        assert len(_spawned_pids() - before) >= 2  # the worker's pool was started at initialize
        image = encode_image(landscape())
        url = f"{settings.url()}/predictions/vsyn"

        def post(seed: int) -> requests.Response:
            headers = {**client.auth(), "Content-Type": "image/png", "X-Vsyn-Seed": str(seed)}
            return requests.post(url, data=image, headers=headers, timeout=120)

        with ThreadPoolExecutor(4) as pool:  # four at once: one batch, encoded over both processes
            responses = list(pool.map(post, [5, 5, 6, 7]))
        assert all(r.status_code == 200 and r.headers["Content-Type"] == "video/mp4" for r in responses)
        frames = {r.headers.get("X-Vsyn-Seed"): decode_video(r.content).shape for r in responses}
        assert set(frames.values()) == {(9, 32, 32, 3)}  # tiny-cpu: 9 frames of 32 px
        assert responses[0].content == responses[1].content and responses[0].content != responses[2].content
        assert max(int(r.headers.get("X-Vsyn-Batch-Size", 1)) for r in responses) > 1  # they were batched
    finally:
        server.stop(settings)
    deadline = time.monotonic() + 15
    while _spawned_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _spawned_pids() - before, "encode processes outlived the server"
