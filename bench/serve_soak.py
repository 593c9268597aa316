"""Soak: good and hostile clients together, for a while, against a real server with its front.

    python bench/serve_soak.py                        # private server (tiny-cpu generator, random init), 4 minutes
    python bench/serve_soak.py --run-dir runs/serve   # a server started by `vsyn serve start`
    python bench/serve_soak.py --seconds 15 --good 2 --hostile 3 --flood 60 --json out.json --no-record

Good clients each come from their own loopback address (127.0.10.x: the front limits per client address) and run a
closed loop of raw PNG posts with a Content-Type, re-reading the key file before every request as a client must
(the server renews its keys) and sending a request once more when it raced a renewal. Each must get a video.

Hostile clients (127.0.20.x) cycle through: an idle-connection flood (connections that never finish their header),
a body that stalls, a burst over the per-client rate (GET /ping), a body over the size limit, a decompression bomb,
an expensive request (a 5000 x 5000 photo, 128 frames of webm, size=input: served within the cost cap or refused),
and malformed requests (not an image, a truncated PNG, no key, a repeated option header, a 5000-digit seed, a
duplicate form field, OPTIONS /). Their answers may be any 4xx; a 5xx, or a request or connection the server
neither answers nor cuts off within --hang-s, is a failure.

Reported: good OK / failed and p50 / p99 latency, hostile requests by answer, 5xx and hangs, flood connections
cut off, worker restarts (worker pids seen change), and the resident memory of the server's processes (TorchServe
group and nginx group) before and after. The table is printed and appended with machine, commit and command to
bench/RESULTS.md. Exit status 0 only when no good request failed and there was no 5xx, hang or worker restart.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import io
import json
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before any vsyn/serve import

from record import RESULTS, append_report, provenance  # noqa: E402 - bench/record.py


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def good_image(size: int = 128) -> bytes:
    """A landscape-like PNG: sky gradient over textured ground (deterministic)."""
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([90, 140, 230]) + y * np.array([80, 60, -30])
    ground = np.array([60, 110, 50]) + rng.normal(0, 12, (size, size, 3))
    return png(np.where(y > 0.6, ground, sky + 0 * ground).clip(0, 255).astype(np.uint8))


def huge_photo(side: int = 5000) -> bytes:
    """A `side` x `side` PNG that compresses well (a smooth gradient): a small body, a large decode."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0 + 0 * ramp[None, :]), -1)
    img = Image.fromarray(rgb.astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class Server:
    """Where and how to reach the server under test (front URL, key file, TorchServe's management API)."""

    def __init__(self, settings: Any):
        from serve.keys import read_key_file

        self.settings = settings
        self.read_key_file = read_key_file
        self.host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
        self.port = settings.inference_port
        self.tls = None
        if settings.tls_cert:
            self.tls = ssl.create_default_context(cafile=settings.tls_cert)

    def key(self, api: str = "inference") -> str:
        return self.read_key_file(self.settings.key_file)[api].key

    def connection(self, source: str, timeout: float) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, source_address=(source, 0),
                                               context=self.tls)  # fmt: skip
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=(source, 0))

    def socket(self, source: str) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=10, source_address=(source, 0))
        return self.tls.wrap_socket(s, server_hostname=self.host) if self.tls else s

    def workers(self) -> list[int]:
        import requests

        url = f"{self.settings.url('management')}/models/vsyn"
        r = requests.get(url, headers={"Authorization": f"Bearer {self.key('management')}"}, timeout=10)
        r.raise_for_status()
        return [w["pid"] for d in r.json() for w in d.get("workers", [])]

    def rss_mib(self) -> float:
        """Resident memory of every process in the TorchServe and nginx process groups."""
        groups = set()
        for pid_file in (self.settings.pid_file, self.settings.front_dir / "nginx.pid"):
            try:
                groups.add(int(pid_file.read_text().strip()))
            except (OSError, ValueError):
                pass
        total_kib = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getpgid(int(proc.name)) not in groups:
                    continue
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
            except (OSError, ValueError, ProcessLookupError):
                continue
        return total_kib / 1024


class Tally:
    """Thread-safe counters and latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.good_ok = self.good_failed = 0
        self.good_ms: list[float] = []
        self.good_errors: collections.Counter[str] = collections.Counter()
        self.hostile: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, answer) -> count
        self.flood_opened = self.flood_cut = 0

    def hostile_answer(self, kind: str, answer: str) -> None:
        with self.lock:
            self.hostile[(kind, answer)] += 1

    @property
    def hostile_5xx(self) -> int:
        return sum(n for (_, a), n in self.hostile.items() if a[:1] == "5")

    @property
    def hangs(self) -> int:
        return sum(n for (_, a), n in self.hostile.items() if a == "hang")


def good_client(server: Server, index: int, image: bytes, frames: int, deadline: float, tally: Tally) -> None:
    source = f"127.0.10.{index + 1}"
    rng = random.Random(index)
    conn = None
    while time.monotonic() < deadline:
        start = time.perf_counter()
        error = None
        try:
            for attempt in (0, 1):
                key = server.key()
                conn = conn or server.connection(source, timeout=300)
                conn.request("POST", "/predictions/vsyn", body=image, headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "image/png", "X-Vsyn-Frames": str(frames),
                    "X-Vsyn-Seed": str(rng.randrange(2**31))})  # fmt: skip
                resp = conn.getresponse()
                body = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                if attempt == 0 and resp.status == 400 and b"InvalidKeyException" in body and server.key() != key:
                    continue  # raced a key renewal: the file already holds the new key
                break
            if resp.status != 200 or resp.getheader("Content-Type") != "video/mp4" or body[4:8] != b"ftyp":
                error = f"HTTP {resp.status}: {body[:120]!r}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            if conn is not None:
                conn.close()
            conn = None
        with tally.lock:
            if error:
                tally.good_failed += 1
                tally.good_errors[error[:100]] += 1
            else:
                tally.good_ok += 1
                tally.good_ms.append(1e3 * (time.perf_counter() - start))


def _request(server: Server, source: str, method: str, path: str, body: bytes = b"",
             headers: list[tuple[str, str]] | None = None, timeout: float = 30.0) -> str:  # fmt: skip
    """One hostile request; its answer as "413" etc., "hang" (no answer in time) or "reset"."""
    conn = server.connection(source, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)
    except TimeoutError:
        return "hang"
    except (ConnectionError, http.client.RemoteDisconnected, ssl.SSLError):
        return "reset"
    finally:
        conn.close()


def _wait_closed(socks: list[socket.socket], deadline: float) -> int:
    """How many of `socks` the server closed (or answered and closed) before `deadline`."""
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        still = []
        for s in open_:
            s.settimeout(0.02)
            try:
                if s.recv(65536) == b"":
                    continue  # closed
                still.append(s)  # an answer (408): wait for the close after it
            except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                still.append(s)
            except OSError:
                continue  # reset: cut off
        open_ = still
        time.sleep(0.05)
    return len(socks) - len(open_)


class Hostile:
    """One hostile client: cycles through the kinds of abuse until the deadline."""

    def __init__(self, server: Server, index: int, args: argparse.Namespace, tally: Tally, huge: bytes):
        self.server, self.source, self.args, self.tally, self.huge = server, f"127.0.20.{index + 1}", args, tally, huge
        self.kinds = [self.flood, self.slow_body, self.rate, self.oversize, self.bomb, self.expensive, self.malformed]
        self.kinds = self.kinds[index % len(self.kinds):] + self.kinds[:index % len(self.kinds)]

    def run(self, deadline: float) -> None:
        i = 0
        while time.monotonic() < deadline:
            self.kinds[i % len(self.kinds)](deadline)
            i += 1

    def _cutoff(self) -> float:
        s = self.server.settings
        return time.monotonic() + s.header_timeout_s + s.body_timeout_s + self.args.hang_s

    def flood(self, deadline: float) -> None:
        socks = []
        for n in range(self.args.flood):
            try:
                s = self.server.socket(self.source)
                if n % 2:
                    s.sendall(b"POST /predictions/vsyn HTTP/1.1\r\nHost: soak\r\n")  # and never the rest
                socks.append(s)
            except OSError:
                self.tally.hostile_answer("flood", "refused")
        closed = _wait_closed(socks, self._cutoff())
        for s in socks:
            s.close()
        with self.tally.lock:
            self.tally.flood_opened += len(socks)
            self.tally.flood_cut += closed
        for _ in range(len(socks) - closed):
            self.tally.hostile_answer("flood", "hang")

    def slow_body(self, deadline: float) -> None:
        try:
            s = self.server.socket(self.source)
        except OSError:
            self.tally.hostile_answer("slow body", "refused")
            return
        s.sendall(f"POST /predictions/vsyn HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {self.server.key()}\r\n"
                  "Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n".encode() + b"\x89PNG" * 25)  # fmt: skip
        closed = _wait_closed([s], self._cutoff())
        s.close()
        self.tally.hostile_answer("slow body", "cut off" if closed else "hang")

    def rate(self, deadline: float) -> None:
        key = self.server.key()
        conn = self.server.connection(self.source, timeout=self.args.hang_s)
        try:
            for _ in range(50):
                conn.request("GET", "/ping", headers={"Authorization": f"Bearer {key}"})
                resp = conn.getresponse()
                resp.read()
                self.tally.hostile_answer("rate", str(resp.status))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = self.server.connection(self.source, timeout=self.args.hang_s)
        except TimeoutError:
            self.tally.hostile_answer("rate", "hang")
        except (ConnectionError, http.client.HTTPException):
            self.tally.hostile_answer("rate", "reset")
        finally:
            conn.close()
        s = self.server.settings
        if s.rate_per_client:  # let this address's bucket refill, so its next requests reach the model server
            time.sleep(max(0.0, min(deadline - time.monotonic(), s.burst_per_client / s.rate_per_client + 0.5, 10.0)))

    def oversize(self, deadline: float) -> None:
        """A Content-Length over the limit: refused on the header, the body never sent."""
        size = (self.server.settings.max_request_mib + 1) << 20
        try:
            s = self.server.socket(self.source)
            s.sendall(f"POST /predictions/vsyn HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {self.server.key()}\r\n"
                      f"Content-Type: image/png\r\nContent-Length: {size}\r\n\r\n".encode())  # fmt: skip
            s.settimeout(self.args.hang_s)
            answer = s.recv(4096)
            s.close()
            self.tally.hostile_answer("oversize", answer[9:12].decode() if answer.startswith(b"HTTP/") else "reset")
        except TimeoutError:
            self.tally.hostile_answer("oversize", "hang")
        except OSError:
            self.tally.hostile_answer("oversize", "reset")

    def _post(self, kind: str, body: bytes, headers: list[tuple[str, str]], with_key: bool = True) -> None:
        auth = [("Authorization", f"Bearer {self.server.key()}")] if with_key else []
        self.tally.hostile_answer(kind, _request(self.server, self.source, "POST", "/predictions/vsyn", body,
                                                 auth + headers, timeout=self.args.hang_s))  # fmt: skip

    def bomb(self, deadline: float) -> None:
        self._post("bomb", header_only_png(100_000, 100_000), [("Content-Type", "image/png")])

    def expensive(self, deadline: float) -> None:
        self._post("expensive", self.huge, [("Content-Type", "image/png"), ("X-Vsyn-Frames", "128"),
                                            ("X-Vsyn-Format", "webm"), ("X-Vsyn-Size", "input")])  # fmt: skip

    def malformed(self, deadline: float) -> None:
        image = good_image(64)
        png_type = [("Content-Type", "image/png")]
        self._post("malformed", os.urandom(2048), png_type)
        self._post("malformed", image[: len(image) // 2], png_type)
        self._post("malformed", image, png_type, with_key=False)
        self._post("malformed", image, png_type + [("X-Vsyn-Seed", "1"), ("X-Vsyn-Seed", "2")])
        seed = json.dumps({"image": base64.b64encode(image).decode()})[:-1] + ', "seed": ' + "9" * 5000 + "}"
        self._post("malformed", seed.encode(), [("Content-Type", "application/json")])
        boundary = "soakboundary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n"]  # fmt: skip
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="seed"\r\n\r\n{v}\r\n'.encode() for v in (1, 2)]
        form = b"".join(parts) + f"--{boundary}--\r\n".encode()
        self._post("malformed", form, [("Content-Type", f"multipart/form-data; boundary={boundary}")])
        self.tally.hostile_answer("malformed", _request(self.server, self.source, "OPTIONS", "/",
                                                        timeout=self.args.hang_s))  # fmt: skip


def watch_workers(server: Server, stop: threading.Event, seen: set[int]) -> None:
    while not stop.wait(2.0):
        try:
            seen.update(server.workers())
        except Exception:  # noqa: BLE001 - a busy moment; the next poll sees the pids
            pass


def soak(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    image = good_image()
    huge = huge_photo()
    for seed in range(3):  # warm-up: first connections, lazy initialisation
        conn = server.connection("127.0.0.1", timeout=300)
        conn.request("POST", "/predictions/vsyn", body=image, headers={
            "Authorization": f"Bearer {server.key()}", "Content-Type": "image/png", "X-Vsyn-Seed": str(seed)})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise SystemExit(f"warm-up request failed: HTTP {resp.status}")
    workers_before = set(server.workers())
    rss_before = server.rss_mib()
    tally = Tally()
    deadline = time.monotonic() + args.seconds
    seen: set[int] = set(workers_before)
    stop = threading.Event()
    threads = [threading.Thread(target=watch_workers, args=(server, stop, seen), daemon=True)]
    threads += [threading.Thread(target=good_client, args=(server, i, image, args.frames, deadline, tally))
                for i in range(args.good)]  # fmt: skip
    threads += [threading.Thread(target=Hostile(server, i, args, tally, huge).run, args=(deadline,))
                for i in range(args.hostile)]  # fmt: skip
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    wall = time.monotonic() - started
    seen.update(server.workers())
    rss_after = server.rss_mib()
    ms = np.array(tally.good_ms) if tally.good_ms else np.array([float("nan")])
    return {
        "seconds": args.seconds, "wall_s": round(wall, 1), "good_clients": args.good, "hostile_clients": args.hostile,
        "good_ok": tally.good_ok, "good_failed": tally.good_failed, "good_errors": dict(tally.good_errors),
        "good_p50_ms": float(np.percentile(ms, 50)), "good_p99_ms": float(np.percentile(ms, 99)),
        "good_videos_s": tally.good_ok / wall,
        "hostile_requests": sum(tally.hostile.values()), "hostile_5xx": tally.hostile_5xx, "hangs": tally.hangs,
        "hostile": {f"{k} {a}": n for (k, a), n in sorted(tally.hostile.items())},
        "flood_opened": tally.flood_opened, "flood_cut": tally.flood_cut,
        "worker_restarts": len(seen - workers_before), "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
    }  # fmt: skip


def table(r: dict[str, Any]) -> str:
    head = ("| good / hostile clients | seconds | good OK | good failed | good p50 (ms) | good p99 (ms) | videos/s "
            "| hostile requests | hostile 5xx | hangs | flood connections cut / opened | worker restarts "
            "| server RSS before / after (MiB) |")  # fmt: skip
    row = (f"| {r['good_clients']} / {r['hostile_clients']} | {r['wall_s']:.0f} | {r['good_ok']} | {r['good_failed']} "
           f"| {r['good_p50_ms']:.0f} | {r['good_p99_ms']:.0f} | {r['good_videos_s']:.2f} | {r['hostile_requests']} "
           f"| {r['hostile_5xx']} | {r['hangs']} | {r['flood_cut']} / {r['flood_opened']} | {r['worker_restarts']} "
           f"| {r['rss_before_mib']:.0f} / {r['rss_after_mib']:.0f} |")  # fmt: skip
    answers = ", ".join(f"{k}: {n}" for k, n in r["hostile"].items())
    rule = "|" + "---:|" * (head.count("|") - 1)
    lines = [head, rule, row, "", f"Hostile answers (kind answer: count): {answers}."]
    if r["good_errors"]:
        lines.append(f"Good-request failures: {r['good_errors']}.")
    return "\n".join(lines)


def private_server(args: argparse.Namespace, tmp: Path) -> tuple[Any, Any]:
    """Export a randomly initialised generator and start it behind the front with default settings."""
    import torch

    from serve import server
    from serve.archive import ServingOptions, export
    from serve.config import ServerSettings
    from vsyn.config import load_config
    from vsyn.nn import build_generator
    from vsyn.snapshot import save_snapshot

    torch.manual_seed(0)
    cfg = load_config(args.preset)
    generator = build_generator(cfg.model)
    snapshot = save_snapshot(tmp / "snapshot", generator, generator, cfg, step=0, kimg=0.0)
    export(snapshot, tmp / "store", options=ServingOptions(encoder_preset="veryfast"))
    ports = server.free_ports(6)
    settings = ServerSettings(model_store=tmp / "store", run_dir=tmp / "run", inference_port=ports[0],
                              management_port=ports[1], metrics_port=ports[2], grpc_inference_port=ports[3],
                              grpc_management_port=ports[4], backend_port=ports[5], front=args.front)  # fmt: skip
    server.start(settings, wait_s=300)
    return settings, lambda: server.stop(settings, drain_s=10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", help="soak the server started by `vsyn serve start --run-dir DIR`")
    p.add_argument("--preset", default="tiny-cpu", help="private server: generator size, random init (tiny-cpu)")
    p.add_argument("--front", default="nginx", choices=("nginx", "none"), help="private server's front (nginx)")
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--good", type=int, default=8, help="good clients (default 8)")
    p.add_argument("--hostile", type=int, default=2, help="hostile clients (default 2)")
    p.add_argument("--flood", type=int, default=500, help="connections per idle-flood round (default 500)")
    p.add_argument("--frames", type=int, default=9, help="frames per good request (default 9)")
    p.add_argument("--hang-s", type=float, default=30.0, help="no answer this long past the front's cut-offs: a hang")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    from serve.config import ServerSettings

    with tempfile.TemporaryDirectory(prefix="bench-soak-", dir=os.environ.get("TMPDIR")) as tmp:
        if args.run_dir:
            settings, stop = ServerSettings.load(args.run_dir), (lambda: None)
            where = f"the server at {settings.url()} (front {settings.front})"
        else:
            settings, stop = private_server(args, Path(tmp))
            where = f"a private server ({args.preset}, random init, front {args.front}, default limits)"
        try:
            result = soak(Server(settings), args)
        finally:
            stop()
    s = settings
    limits = (f"front {s.front}: header/body/idle timeouts {s.header_timeout_s:g}/{s.body_timeout_s:g}/"
              f"{s.idle_timeout_s:g} s, {s.rate_per_client:g} requests/s per client (bursts {s.burst_per_client}), "
              f"{s.connections_per_client} at once, body limit {s.max_request_mib} MiB")  # fmt: skip
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join([
        f"## bench/serve_soak.py: {args.good} good + {args.hostile} hostile clients, {args.seconds:g} s — {stamp}",
        "",
        *provenance(load_before),
        f"- server: {where}; {limits}; good requests: 128 px PNG, {args.frames} frames, mp4; idle floods of "
        f"{args.flood} connections; CPU figures",
        "",
        table(result),
        "",
    ])  # fmt: skip
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_record:
        append_report(report)
    ok = not result["good_failed"] and not result["hostile_5xx"] and not result["hangs"] and not result["worker_restarts"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
