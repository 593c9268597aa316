"""The nginx front against the real nginx and TorchServe: what it exposes, what it refuses, and whom it cuts off.

The shared server (conftest) runs the front with 2 s header and body timeouts, a 3 s idle timeout, 16 requests at
once and 20 requests/s (bursts of 24) per client address. Clients on other loopback addresses (127.0.0.2, ...)
stand for other machines.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import statistics
import subprocess
import threading
import time

import pytest
import requests

from serve_helpers import RES, assert_video, encode_image, landscape, post, raw_http

pytestmark = pytest.mark.service


def assert_json_refusal(status: int, headers: dict, body: bytes, code: int, needle: str) -> dict:
    assert status == code, (status, body[:300])
    assert headers["content-type"].startswith("application/json")
    reason = json.loads(body)
    assert reason["code"] == code and needle in reason["message"], reason
    return reason


def test_only_the_inference_api_is_exposed(served) -> None:
    settings, client = served
    for method, path, code in [("OPTIONS", "/", 404), ("GET", "/api-description", 404), ("GET", "/models", 404),
                               ("OPTIONS", "/predictions/vsyn", 405), ("POST", "/ping", 405),
                               ("GET", "/predictions/vsyn", 405), ("POST", "/predictions/other", 404),
                               ("POST", "/predictions/vsyn/1.0", 404), ("GET", "/metrics", 404)]:  # fmt: skip
        status, headers, body = raw_http(settings, method, path, headers=[*client.auth().items()])
        assert_json_refusal(status, headers, body, code, "POST /predictions/<model>")
        assert b"TorchServe" not in body and "version" not in body.decode().lower()
        assert headers["server"] == "nginx"  # server_tokens off: no version
    # TorchServe itself listens on 127.0.0.1 only, on its own port behind the front.
    props = dict(line.split("=", 1) for line in settings.config_path.read_text().splitlines() if "=" in line)
    assert props["inference_address"] == f"http://127.0.0.1:{settings.backend_port}"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert requests.get(f"{settings.url()}/ping", headers=client.auth(), timeout=5).json() == {"status": "Healthy"}


def test_curl_without_a_content_type_gets_its_video(served, tmp_path) -> None:
    """curl --data-binary sends application/x-www-form-urlencoded, which TorchServe fails to decode (500) before
    the handler runs: the front passes it on as a raw body."""
    settings, client = served
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode_image(landscape()))
    out = tmp_path / "clip.mp4"
    result = subprocess.run(["curl", "-sS", "-f", "-H", f"Authorization: Bearer {client.key()}", "--data-binary",
                             f"@{photo}", f"{settings.url()}/predictions/vsyn", "-o", str(out)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    from vsyn.video import decode_video

    assert decode_video(out.read_bytes()).shape[1:3] == (RES, RES)


def test_repeated_headers_are_refused_by_name(served) -> None:
    """TorchServe keeps the last of two equal header names; the front refuses the request and names the header."""
    settings, client = served
    image = encode_image(landscape())
    base = [*client.auth().items(), ("Content-Type", "image/png")]
    for repeated in ([("X-Vsyn-Seed", "1"), ("X-Vsyn-Seed", "2")], [("X-Vsyn-Frames", "3"), ("x-vsyn-frames", "3")],
                     [("Content-Type", "image/png")]):  # fmt: skip
        status, headers, body = raw_http(settings, "POST", "/predictions/vsyn", image, base + repeated)
        name = repeated[-1][0]
        assert_json_refusal(status, headers, body, 400, f"header {name} appears more than once")
    status, _, _ = raw_http(settings, "POST", "/predictions/vsyn", image, base + [("X-Vsyn-Seed", "1")])
    assert status == 200


def test_oversized_body_is_refused_with_json(served) -> None:
    settings, client = served
    body = b"\0" * (3 << 20)  # the shared server's limit is 2 MiB
    status, headers, content = raw_http(settings, "POST", "/predictions/vsyn", body,
                                        [*client.auth().items(), ("Content-Type", "image/png")])  # fmt: skip
    assert_json_refusal(status, headers, content, 413, "larger than the limit of 2 MiB")


def test_one_client_over_its_rate_gets_429_while_another_is_served(served) -> None:
    settings, client = served
    auth = [*client.auth().items()]
    results: list[int] = []
    reasons: list[dict] = []

    def hammer() -> None:  # 80 pings as fast as one connection goes: far over 20/s with bursts of 24
        for _ in range(80):
            status, headers, body = raw_http(settings, "GET", "/ping", headers=auth, source="127.0.0.2")
            results.append(status)
            if status == 429:
                reasons.append(json.loads(body))

    thread = threading.Thread(target=hammer)
    thread.start()
    image = encode_image(landscape())
    served_statuses = []
    while thread.is_alive() or not served_statuses:
        status, _, body = raw_http(settings, "POST", "/predictions/vsyn", image,
                                   [*auth, ("Content-Type", "image/png"), ("X-Vsyn-Frames", "3")],
                                   source="127.0.0.3")  # fmt: skip
        served_statuses.append(status)
    thread.join()
    assert set(results) == {200, 429} and results.count(429) >= 20, results
    assert reasons[0]["code"] == 429 and "too many requests" in reasons[0]["message"]
    assert set(served_statuses) == {200}, served_statuses  # the other address was never limited


def test_one_client_over_its_connection_limit_gets_429_while_another_is_served(served) -> None:
    """Requests in progress count per client address (16 on the shared server): stalled uploads hold them."""
    settings, client = served
    key = client.key()
    held = []
    for _ in range(settings.connections_per_client):  # each holds a request in progress until the body timeout
        s = socket.create_connection(("127.0.0.1", settings.inference_port), source_address=("127.0.0.5", 0))
        s.sendall(f"POST /predictions/vsyn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                  "Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n".encode())  # fmt: skip
        held.append(s)
    try:
        time.sleep(0.2)  # let nginx read those headers
        status, headers, body = raw_http(settings, "GET", "/ping", headers=[*client.auth().items()], source="127.0.0.5")
        assert_json_refusal(status, headers, body, 429, f"at most {settings.connections_per_client} at once")
        status, _, _ = raw_http(settings, "GET", "/ping", headers=[*client.auth().items()], source="127.0.0.6")
        assert status == 200
    finally:
        for s in held:
            s.close()


def _watch_closes(socks: list[socket.socket], deadline: float, closed_at: dict[int, float]) -> None:
    """Record when the server closes (or resets) each socket, until all are closed or `deadline` passes."""
    import selectors

    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    while len(closed_at) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:  # reset: cut off
                data = b""
            if not data:
                closed_at[key.data] = time.monotonic()
                sel.unregister(key.fileobj)
    sel.close()


def test_idle_and_slow_clients_are_cut_off_while_good_clients_keep_their_p99(served) -> None:
    """300 connections that never finish their header (some silent, some mid-header) and 20 that stall in their
    body, from other addresses: the front closes every one within its timeouts (2 s each) and TorchServe never
    sees them, while a good client's latency stays where it was."""
    settings, client = served
    image = encode_image(landscape())

    def good_latencies(n: int) -> list[float]:
        out = []
        for seed in range(n):
            start = time.perf_counter()
            assert_video(post(client, "raw", image, frames=3, seed=seed), "mp4", 3, (RES, RES))
            out.append(time.perf_counter() - start)
        return out

    quiet = good_latencies(12)
    hostile = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", settings.inference_port), source_address=(f"127.0.1.{1 + i % 50}", 0))
        if i % 3 == 1:
            s.sendall(b"POST /predictions/vsyn HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the header
        elif i % 3 == 2:
            s.sendall(b"GET /pi")
        hostile.append(s)
    key = client.key()
    for i in range(20):  # the whole header, then a body that stops after 100 of 1 MB
        s = socket.create_connection(("127.0.0.1", settings.inference_port), source_address=("127.0.2.1", 0))
        s.sendall(f"POST /predictions/vsyn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                  "Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n".encode() + b"\x89PNG" * 25)  # fmt: skip
        hostile.append(s)
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    # Cut-offs: 2 s of header or body timeout, plus slack for nginx's timer and a busy 2-core machine.
    watcher = threading.Thread(target=_watch_closes, args=(hostile, opened + 10.0, closed_at))
    watcher.start()
    flooded = good_latencies(12)
    watcher.join()
    for s in hostile:
        s.close()
    assert len(closed_at) == len(hostile), f"{len(hostile) - len(closed_at)} of {len(hostile)} connections still open"
    assert max(closed_at.values()) - opened < 10.0
    p99 = lambda xs: statistics.quantiles(xs, n=100)[98]  # noqa: E731
    assert p99(flooded) <= 2 * p99(quiet) + 0.5, (quiet, flooded)


def test_tls_front_with_a_self_signed_certificate(served, tmp_path) -> None:
    """A second front, with TLS, before the same TorchServe: HTTPS works with the certificate as trust anchor,
    plain HTTP to the TLS port is refused with a JSON reason."""
    from serve import front
    from serve.server import free_ports

    settings, client = served
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    tls = dataclasses.replace(settings, run_dir=tmp_path / "tls-run", inference_port=free_ports(1)[0],
                              tls_cert=str(cert), tls_key=str(key))  # fmt: skip
    tls.log_dir.mkdir(parents=True)
    front.write_config(tls)
    front.check(tls)
    front.start(tls)
    try:
        assert tls.url() == f"https://127.0.0.1:{tls.inference_port}"
        url = f"{tls.url()}/predictions/vsyn"
        headers = {**client.auth(), "Content-Type": "image/png", "X-Vsyn-Frames": "3"}
        resp = requests.post(url, data=encode_image(landscape()), headers=headers, verify=str(cert), timeout=60)
        assert_video(resp, "mp4", 3, (RES, RES))
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without the certificate
            requests.get(f"{tls.url()}/ping", headers=client.auth(), timeout=5)
        plain = requests.get(f"http://127.0.0.1:{tls.inference_port}/ping", headers=client.auth(), timeout=5)
        assert plain.status_code == 400 and plain.headers["Content-Type"] == "application/json"
    finally:
        front.stop(tls, drain_s=2)
    assert not front.alive(tls)
