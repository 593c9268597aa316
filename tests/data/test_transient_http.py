"""Transient network faults are retried, not counted as lost shards: a real local HTTP server that answers 503
first and then drops the connection half-way through each shard, before serving the rest with a Range request."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import threaded_http_server
from vsyn.data import make_loader

from .helpers import CLIPS, FRAMES

pytestmark = pytest.mark.service


class FlakyShardHandler(http.server.BaseHTTPRequestHandler):
    """Per shard: 1st request -> 503; 2nd -> full headers, half the body, connection closed; later -> served,
    honouring `Range: bytes=N-` with 206. The manifest is served plainly."""

    root: Path
    requests: Counter
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        with self.lock:
            self.requests[path.name] += 1
            nth = self.requests[path.name]
        if path.suffix == ".tar" and nth == 1:
            self.send_error(503, "try again")
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if path.suffix == ".tar" and nth == 2:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # drop it mid-body
            return
        self.wfile.write(data[start:])


@pytest.fixture
def flaky_server(procedural_shards):
    handler = type("Handler", (FlakyShardHandler,), {"root": procedural_shards, "requests": Counter()})
    with threaded_http_server(handler) as port:
        yield f"http://127.0.0.1:{port}", handler.requests


def test_503_and_dropped_connection_are_retried_and_resumed(flaky_server, procedural_shards):
    base, requests = flaky_server
    loader = make_loader(f"{base}/manifest.json", frames=FRAMES, batch_size=4, mode="eval", workers=2)
    keys = [k for batch in loader for k in batch["__key__"]]
    assert len(keys) == len(set(keys)) == CLIPS and loader.skipped == 0  # nothing lost
    shards = sorted(p.name for p in procedural_shards.glob("*.tar"))
    # every shard needed its 503 retry, the cut-off read and a resumed (Range) read: exactly 3 requests each
    assert {name: requests[name] for name in shards} == {name: 3 for name in shards}
