"""Transient S3 faults are retried and resumed, not counted as lost shards: the real SeaweedFS server behind a local
HTTP proxy that answers 503 SlowDown to the first GET of every shard and drops the connection half-way through the
second (SigV4 signatures survive: the proxy forwards the client's Host header unchanged)."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.conftest import threaded_http_server
from vsyn.data import make_loader

from .helpers import CLIPS, FRAMES, shards_cli

pytestmark = pytest.mark.service
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length"}


def make_proxy(upstream: str, gets: Counter) -> type[http.server.BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class FlakyS3Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> tuple[int, list[tuple[str, str]], bytes]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            req = urllib.request.Request(upstream + self.path, data=body, method=self.command,
                                         headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, list(resp.headers.items()), resp.read()
            except urllib.error.HTTPError as err:
                return err.code, list(err.headers.items()), err.read()

        def _handle(self) -> None:
            shard = self.command == "GET" and self.path.split("?")[0].endswith(".tar")
            nth = 0
            if shard and not self.headers.get("Range"):
                with lock:
                    gets[self.path.split("?")[0].rsplit("/", 1)[-1]] += 1
                    nth = gets[self.path.split("?")[0].rsplit("/", 1)[-1]]
            if nth == 1:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                error = b"<Error><Code>SlowDown</Code><Message>try again</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            status, headers, data = self._forward()
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if nth == 2:  # half the body, then the connection drops
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815 - http.server's naming

    return FlakyS3Proxy


@pytest.fixture
def flaky_s3(s3_server, procedural_shards, monkeypatch):
    url = f"s3://{s3_server.bucket}/flaky"
    assert shards_cli("upload", procedural_shards, url) == 0
    gets: Counter = Counter()
    with threaded_http_server(make_proxy(s3_server.endpoint, gets)) as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        yield url, gets


def test_s3_slowdown_and_dropped_connection_are_retried_and_resumed(flaky_s3, procedural_shards):
    url, gets = flaky_s3
    # reader workers are new processes: each builds its boto3 client from the patched environment
    loader = make_loader(f"{url}/manifest.json", frames=FRAMES, batch_size=4, mode="eval", workers=2)
    keys = [k for batch in loader for k in batch["__key__"]]
    assert len(keys) == len(set(keys)) == CLIPS and loader.skipped == 0  # nothing lost
    shards = sorted(p.name for p in procedural_shards.glob("*.tar"))
    # each shard: a 503 (retried by botocore) and a cut-off GET; its resume is a Range GET, not counted here
    assert {name: gets[name] for name in shards} == {name: 2 for name in shards}
