"""Serving benchmark: latency p50/p95/p99 and videos/s at several concurrencies, 128 px x 25-frame mp4.

Two modes measure the same handler code (`serve.handler.VsynHandler`: decode -> animate -> encode):
- default: against a real TorchServe over HTTP with token auth. Without --run-dir it exports a randomly
  initialised sky128-sized generator, starts a private server on free ports, and stops it afterwards;
  with --run-dir it uses a server started by `vsyn serve start` (its model must be 128 px).
- --direct: in process, no Java needed (GPU boxes): a dynamic batcher with TorchServe's semantics (up to
  --batch-size requests, waiting at most --max-batch-delay-ms) feeds the handler directly.

Each concurrency level is a closed loop: C clients, each sending its next request when the last one returns.
The table is printed and appended with machine, commit and command to bench/RESULTS.md.

    python bench/serve.py                    # CPU, TorchServe
    python bench/serve.py --direct --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import shlex
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from record import RESULTS, append_report, commit, machine  # bench/record.py

ROOT = Path(__file__).resolve().parents[1]


def test_image(size: int = 128) -> bytes:
    """A landscape-like PNG: sky gradient, textured ground (deterministic)."""
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([90, 140, 230]) + y * np.array([80, 60, -30])
    ground = np.array([60, 110, 50]) + rng.normal(0, 12, (size, size, 3))
    img = np.where(y > 0.6, ground, sky + 0 * ground).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def make_snapshot(directory: Path, preset: str) -> Path:
    from vsyn.config import load_config
    from vsyn.nn import build_generator
    from vsyn.snapshot import save_snapshot

    torch.manual_seed(0)
    cfg = load_config(preset)
    generator = build_generator(cfg.model)
    return save_snapshot(directory / "snapshot", generator, generator, cfg, step=0, kimg=0.0)


# ---- the two ways of sending one request -------------------------------------------------------------------


class HttpTarget:
    """POST raw PNG bytes to a running TorchServe."""

    def __init__(self, settings, frames: int, fmt: str):
        import requests

        from serve.client import VsynClient

        self.client = VsynClient(settings)
        self.url = f"{settings.url()}/predictions/vsyn"
        self.headers = {"Content-Type": "image/png", "X-Vsyn-Frames": str(frames), "X-Vsyn-Format": fmt}
        self.local = threading.local()
        self.requests = requests

    def __call__(self, image: bytes, seed: int) -> int:
        session = getattr(self.local, "session", None) or self.requests.Session()
        self.local.session = session  # one keep-alive connection per client thread
        headers = {**self.headers, **self.client.auth(), "X-Vsyn-Seed": str(seed)}
        r = session.post(self.url, data=image, headers=headers, timeout=600)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        return len(r.content)


class _Context:
    """The slice of TorchServe's Context the handler uses."""

    def __init__(self, model_dir: Path, gpu_id: int | None, handler_options: dict[str, Any], headers: list[dict],
                 batch_size: int = 1):  # fmt: skip
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id}
        self.model_yaml_config = {"batchSize": batch_size, "handler": handler_options}
        self.headers, self.status, self.types = headers, {}, {}

    def get_all_request_header(self, idx: int) -> dict:
        return self.headers[idx]

    def set_response_status(self, code: int, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.types[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        pass


class DirectTarget:
    """The handler in process, behind a TorchServe-like dynamic batcher (one worker thread)."""

    def __init__(self, model_dir: Path, device: str, batch_size: int, max_delay_s: float, frames: int, fmt: str,
                 handler_options: dict[str, Any]):  # fmt: skip
        from serve.handler import VsynHandler

        gpu_id = (torch.device(device).index or 0) if device.startswith("cuda") else None
        self.handler = VsynHandler()
        self.handler.initialize(_Context(model_dir, gpu_id, handler_options, [], batch_size))
        self.options = {"x-vsyn-frames": str(frames), "x-vsyn-format": fmt}
        self.batch_size, self.max_delay_s = batch_size, max_delay_s
        self.queue: queue.Queue[tuple[bytes, int, Future]] = queue.Queue()
        threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.perf_counter() + self.max_delay_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            data = [{"body": bytearray(image)} for image, _, _ in batch]
            headers = [{"body": {"content-type": "image/png"}, **self.options, "x-vsyn-seed": str(seed)}
                       for _, seed, _ in batch]  # fmt: skip
            ctx = _Context(Path("."), None, {}, headers)
            try:
                out = self.handler.handle(data, ctx)
                for i, (_, _, fut) in enumerate(batch):
                    if i in ctx.status:
                        fut.set_exception(RuntimeError(out[i]))
                    else:
                        fut.set_result(len(out[i]))
            except Exception as exc:  # noqa: BLE001
                for _, _, fut in batch:
                    fut.set_exception(exc)

    def __call__(self, image: bytes, seed: int) -> int:
        fut: Future = Future()
        self.queue.put((image, seed, fut))
        return fut.result()


# ---- measurement -------------------------------------------------------------------------------------------


def run_level(send: Callable[[bytes, int], int], image: bytes, concurrency: int, total: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                seed = next(counter, None)
            if seed is None:
                return
            t0 = time.perf_counter()
            send(image, seed)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": total, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99), "videos_s": total / wall}  # fmt: skip


def table(rows: list[dict[str, float]]) -> str:
    lines = ["| concurrency | requests | p50 (ms) | p95 (ms) | p99 (ms) | throughput (videos/s) |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
                     f"{r['videos_s']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direct", action="store_true", help="in-process handler + batcher; no TorchServe/Java")
    p.add_argument("--run-dir", help="use the server started by `vsyn serve start --run-dir DIR`")
    p.add_argument("--preset", default="sky128", help="generator size, randomly initialised (default sky128)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=0, help="requests per level (default max(16, 2 x concurrency))")
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--format", default="mp4", choices=("mp4", "webm", "gif"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batch-delay-ms", type=int, default=20)
    p.add_argument("--device", default="auto", help="direct mode: auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="handler precision")
    p.add_argument("--cuda-graphs", default="on", choices=("on", "off"), help="GPU: replay CUDA graphs (vsyn.graphs)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    load_before = os.getloadavg()[0]
    image = test_image()
    stop: Callable[[], Any] = lambda: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=os.environ.get("TMPDIR")) as tmp:
        tmp_path = Path(tmp)
        if args.direct:
            device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
            send = DirectTarget(make_snapshot(tmp_path, args.preset), device, args.batch_size,
                                args.max_batch_delay_ms / 1e3, args.frames, args.format,
                                {"precision": args.precision, "cuda_graphs": args.cuda_graphs == "on"})  # fmt: skip
            mode = f"direct (in-process handler + batcher), device {device}"
        else:
            from serve import server
            from serve.archive import ServingOptions, export
            from serve.config import ServerSettings

            if args.run_dir:
                settings = ServerSettings.load(args.run_dir)
                mode = f"TorchServe at {settings.url()} (existing server)"
            else:
                store = tmp_path / "store"
                options = ServingOptions(batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay_ms,
                                         precision=args.precision, cuda_graphs=args.cuda_graphs == "on")  # fmt: skip
                export(make_snapshot(tmp_path, args.preset), store, options=options)
                ports = server.free_ports(5)
                settings = ServerSettings(model_store=store, run_dir=tmp_path / "run", inference_port=ports[0],
                                          management_port=ports[1], metrics_port=ports[2],
                                          grpc_inference_port=ports[3], grpc_management_port=ports[4])  # fmt: skip
                server.start(settings, wait_s=300)
                stop = lambda: server.stop(settings)  # noqa: E731
                mode = "TorchServe over HTTP (private server, token auth on)"
            send = HttpTarget(settings, args.frames, args.format)
        try:
            for seed in range(3):  # warm-up: lazy init, allocator, first connections
                send(image, seed)
            rows = []
            for c in args.concurrency:
                run_level(send, image, c, c)  # warm-up at this batch size (first call per shape is slow on CPU)
                rows.append(run_level(send, image, c, args.requests or max(16, 2 * c)))
                print(f"concurrency {c}: p50 {rows[-1]['p50']:.0f} ms, {rows[-1]['videos_s']:.2f} videos/s", flush=True)
        finally:
            stop()

    batching = (f"batch size {args.batch_size}, max batch delay {args.max_batch_delay_ms} ms, "
                f"precision {args.precision}, CUDA graphs {args.cuda_graphs}")  # fmt: skip
    report = "\n".join([
        f"## bench/serve.py: {args.preset} (random init), {args.frames} frames, {args.format} — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        f"- load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} (shared machines: read "
        f"CPU figures with this in mind)",
        f"- commit: {commit()}",
        f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
        f"- mode: {mode}; {batching}; latency = request sent to video bytes received (closed loop)",
        "",
        table(rows),
        "",
    ])  # fmt: skip
    print("\n" + report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
