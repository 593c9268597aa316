"""`vsyn export` and `vsyn serve start|status|token|stop` as a user runs them: separate processes, real nginx and
TorchServe, nothing left behind.

Two servers start at once (their minute of key lifetime runs in parallel):
- "main": nginx front, gRPC on, keys that expire after one minute and are renewed at half-life, logs rotated at
  5 KiB with two copies;
- "bare": no front, keys that expire after one minute and are not renewed.
The tests run in file order; the last one stops "main" with requests in flight.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import yaml

from serve_helpers import RES, assert_video, encode_image, free_ports, grpc_predict, landscape

pytestmark = [pytest.mark.service, pytest.mark.slow]

LOG_MAX_MIB = 5 / 1024  # 5 KiB: a few dozen requests rotate every log


def vsyn(*args: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(cwd)}
    return subprocess.run([sys.executable, "-m", "vsyn", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)  # fmt: skip


def start_args(store: Path, run: Path, *extra: str) -> list[str]:
    ports = free_ports(6)
    return ["serve", "start", "--model-store", str(store), "--run-dir", str(run), "--port", str(ports[0]),
            "--management-port", str(ports[1]), "--metrics-port", str(ports[2]), "--grpc-port", str(ports[3]),
            "--grpc-management-port", str(ports[4]), "--backend-port", str(ports[5]), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def servers(checkpoint, nginx, tmp_path_factory):
    from serve.config import ServerSettings
    from serve_helpers import requires_java

    requires_java()
    tmp = tmp_path_factory.mktemp("lifecycle")
    store, main, bare = tmp / "store", tmp / "main", tmp / "bare"
    bad = vsyn("export", str(checkpoint), "--model-store", str(store), "--encoder-preset", "quick", cwd=tmp)
    assert bad.returncode == 2 and "unknown x264 preset 'quick'" in bad.stderr
    out = vsyn("export", str(checkpoint), "--model-store", str(store), "--batch-size", "1", "--encoder-preset",
               "veryfast", cwd=tmp)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with zipfile.ZipFile(store / "vsyn.mar") as z:  # the worker started below reads this preset
        assert yaml.safe_load(z.read("model-config.yaml"))["handler"]["encoder_preset"] == "veryfast"
    main_start = start_args(store, main, "--grpc", "--token-expiration-min", "1", "--log-max-mib", f"{LOG_MAX_MIB}",
                            "--log-backups", "2")  # fmt: skip
    bare_start = start_args(store, bare, "--front", "none", "--token-expiration-min", "1", "--no-renew-keys")
    env = {**os.environ, "TMPDIR": str(tmp)}
    procs = [subprocess.Popen([sys.executable, "-m", "vsyn", *args], cwd=tmp, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in (main_start, bare_start)]
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stdout + stderr
        yield {"tmp": tmp, "main": ServerSettings.load(main), "bare": ServerSettings.load(bare),
               "main_start": main_start, "first_keys": {n: json.loads((d / "key_file.json").read_text())
                                                        for n, d in (("main", main), ("bare", bare))}}  # fmt: skip
    finally:
        from serve import server

        for run in (main, bare):
            if (run / "torchserve.pid").exists():  # a test failed before stopping it
                server.stop(ServerSettings.load(run), drain_s=5)


def _log_pumps(log_dir: Path) -> list[int]:
    """Live `serve.logpump` processes writing into `log_dir`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"serve.logpump" in cmd and str(log_dir).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def status(run: Path, cwd) -> tuple[int, dict]:
    out = vsyn("serve", "status", "--run-dir", str(run), cwd=cwd, timeout=60)
    return out.returncode, json.loads(out.stdout)


def test_start_and_status(servers, model_store) -> None:
    tmp, main = servers["tmp"], servers["main"].run_dir
    assert (main / "key_file.json").is_file() and (main / "config.properties").is_file()
    assert (main / "logs" / "ts_log.log").is_file() and (main / "front" / "nginx.conf").is_file()
    assert "x264 preset veryfast" in (main / "logs" / "model_log.log").read_text()  # the worker's start-up line
    assert not (tmp / "logs").exists()  # logs in the run dir, not the cwd
    again = vsyn(*servers["main_start"], cwd=tmp)
    assert again.returncode == 2 and "already runs" in again.stderr
    code, report = status(main, tmp)
    assert code == 0 and report["state"] == "ready" and report["models"] == {"vsyn": ["READY"]}, report
    assert report["url"] == servers["main"].url()
    # The shared store's .mar batches 8: gRPC would fail a refused request's batch mates with it.
    from serve import server
    from serve_helpers import server_settings
    from vsyn.errors import VsynError

    with pytest.raises(VsynError, match="--grpc needs models exported with --batch-size 1"):
        server.start(server_settings(model_store, tmp / "other", grpc=True))


def test_grpc_when_on_maps_refusals_to_grpc_codes(servers) -> None:
    import grpc

    from serve.client import VsynClient
    from vsyn.video import decode_video

    settings = servers["main"]
    client = VsynClient(settings)

    def call(inputs: dict[str, bytes]):
        """As a client must with keys renewed every ~30 s here: the key file's key, once more after a renewal."""
        key = client.key()
        code, out = grpc_predict(settings.grpc_inference_port, key, inputs)
        if code == grpc.StatusCode.PERMISSION_DENIED and "Token Authorization" in str(out) and client.key() != key:
            code, out = grpc_predict(settings.grpc_inference_port, client.key(), inputs)
        return code, out

    image = encode_image(landscape())
    code, video = call({"image": image, "frames": b"4", "seed": b"3"})
    assert code == grpc.StatusCode.OK and decode_video(video).shape == (4, RES, RES, 3)
    for inputs, expected, needle in [
        ({"image": image, "frames": b"1"}, grpc.StatusCode.INVALID_ARGUMENT, "frames must be in"),  # 400
        ({"image": b"not an image"}, grpc.StatusCode.FAILED_PRECONDITION, "not a PNG, JPEG or WebP"),  # 415
        ({"image": image, "frames": b"128", "size": b"input"}, grpc.StatusCode.OK, ""),  # under the default cap
    ]:
        code, details = call(inputs)
        assert code == expected and (needle in details if needle else True), (code, details)
    code, details = grpc_predict(settings.grpc_inference_port, "wrong", {"image": image})
    assert code == grpc.StatusCode.PERMISSION_DENIED and "Token Authorization failed" in details  # TorchServe's own


def test_keys_outlive_their_expiry(servers) -> None:
    """One-minute keys: "main" renews them at half-life and keeps answering past the first expiry (clients follow the
    key file); "bare" does not, and `status` says "key expired" (exit 3) instead of "down" until `vsyn serve token`
    renews them."""
    from serve.client import VsynClient
    
    from serve import server
    from serve.keys import instant

    tmp, main, bare = servers["tmp"], servers["main"], servers["bare"]
    first = {name: keys["inference"]["key"] for name, keys in servers["first_keys"].items()}
    expiry = max(instant(keys["inference"]["expiration time"]) for keys in servers["first_keys"].values())
    client = VsynClient(main)
    image = encode_image(landscape())
    seen, statuses = set(), []
    # until 3 s past the first keys' expiry, and at least 5 requests (the expiry may have passed already when the
    # module's earlier tests were slow: the requests must then still be answered)
    while (datetime.now(timezone.utc) - expiry).total_seconds() < 3 or len(statuses) < 5:
        seen.add(client.key())
        resp = client.predict(image, content_type="image/png", frames=3, seed=len(statuses))
        statuses.append(resp.status_code)
        time.sleep(1.0)
    assert set(statuses) == {200}, statuses  # every request answered, across the renewal and the first expiry
    # renewed (at least once) while the clients kept up: both keys seen, or only the new one when the loop began late
    assert client.key() != first["main"] and (len(seen) >= 2 or first["main"] not in seen)
    stale = requests.get(f"{main.url()}/ping", headers={"Authorization": f"Bearer {first['main']}"}, timeout=5)
    assert stale.status_code == 400 and stale.json()["type"] == "InvalidKeyException"
    assert server.status(main).state == "ready"
    assert "renewed the inference key" in (main.log_dir / "console.log").read_text()

    code, report = status(bare.run_dir, tmp)
    assert code == 3 and report["state"] == "key expired" and report["running"], report
    assert "vsyn serve token" in report["detail"]
    renewed = vsyn("serve", "token", "--run-dir", str(bare.run_dir), cwd=tmp, timeout=60)
    assert renewed.returncode == 0 and "renewed the inference key" in renewed.stdout, renewed.stderr
    assert server.status(bare).state == "ready"
    assert VsynClient(bare).predict(image, content_type="image/png", frames=3).status_code == 200


def test_logs_are_rotated_and_bounded(servers) -> None:
    """Every log of "main" (TorchServe's through its log4j config, the console and the front through the log pump)
    stays under its 5 KiB size limit with at most two rotated copies, and the console gets nothing per request."""
    from serve.client import VsynClient

    settings = servers["main"]
    client = VsynClient(settings)
    per_request = ("access_log", "front", "ts_log")  # each gets a line (~100-200 bytes) per request
    for _ in range(300):  # until each of them has been rotated (a few dozen requests)
        if all(list(settings.log_dir.glob(f"{stem}.*[0-9]*")) for stem in per_request):
            break
        assert client.ping()["status"] == "Healthy"
        time.sleep(0.11)  # under the front's default 10 requests/s per client
    console = "".join(p.read_text() for p in settings.log_dir.glob("console.log*"))
    for per_request_line in ("/ping", "/predictions/vsyn", "Backend received inference", "MODEL_LOG"):
        assert per_request_line not in console  # errors and the key keeper's lines only
    limit = int(LOG_MAX_MIB * 1024 * 1024)
    logs = sorted(settings.log_dir.iterdir())
    for stem in ("access_log", "ts_log", "model_log", "front", "console"):
        live = settings.log_dir / f"{stem}.log"
        rotated = [p for p in logs if p.name.startswith(f"{stem}.") and p != live]
        assert live.stat().st_size <= limit + 1024, (live, live.stat().st_size)  # + one log event past the limit
        assert len(rotated) <= 2, rotated
        if stem in per_request:
            assert rotated, f"{stem} was never rotated"
        for p in rotated:
            assert p.stat().st_size <= limit + 1024


def test_stop_drains_requests_in_flight(servers) -> None:
    """`vsyn serve stop` with six requests in flight (one batch at a time: they queue): the front stops accepting
    at once, every one of the six gets its video, and then everything is gone. The requests are long enough to be
    still queued when `stop` comes: 128 frames each (a 32 px video of 24 frames is answered within 0.1 s)."""
    from serve.client import VsynClient

    tmp, settings = servers["tmp"], servers["main"]
    client = VsynClient(settings)
    image = encode_image(landscape())
    send = lambda seed: client.predict(image, content_type="image/png", frames=128, seed=seed)  # noqa: E731
    pgid = int((settings.run_dir / "torchserve.pid").read_text())
    front_pid = int((settings.front_dir / "nginx.pid").read_text())
    keeper = int(settings.keeper_pid_file.read_text())
    pumps = _log_pumps(settings.log_dir)
    assert len(pumps) == 2  # console.log and front.log
    with ThreadPoolExecutor(6) as pool:
        sent = time.monotonic()
        flying = [pool.submit(send, seed) for seed in range(6)]
        time.sleep(0.3)  # all six sent; the first one generating, the others queued
        assert not flying[-1].done()  # ~0.25 s a request here
        stopping = subprocess.Popen([sys.executable, "-m", "vsyn", "serve", "stop", "--run-dir", str(settings.run_dir)],
                                    cwd=tmp, stdout=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the listener closes at once; in-flight requests keep going
            try:
                socket.create_connection(("127.0.0.1", settings.inference_port), timeout=1).close()
                time.sleep(0.1)
            except OSError:
                break
        else:
            pytest.fail("the front still accepted connections 10 s after stop")
        responses = [f.result(timeout=120) for f in flying]
        print(f"six requests answered in {time.monotonic() - sent:.1f} s")
        out, _ = stopping.communicate(timeout=120)
    assert stopping.returncode == 0 and out.strip() == "stopped"
    for r in responses:
        assert_video(r, "mp4", 128, (RES, RES))
    for pid in (pgid, front_pid):
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # the JVM, every worker, nginx and its workers are gone
    with pytest.raises(ProcessLookupError):
        os.kill(keeper, 0)
    deadline = time.monotonic() + 5
    while _log_pumps(settings.log_dir) and time.monotonic() < deadline:  # they read the end of their pipes
        time.sleep(0.1)
    assert not _log_pumps(settings.log_dir)
    assert not (settings.run_dir / "key_file.json").exists()
    code, report = status(settings.run_dir, tmp)
    assert code == 1 and report["state"] == "down" and report["running"] is False
    from serve import server

    assert server.stop(settings) is False  # "not running"
    assert server.stop(servers["bare"]) is True
