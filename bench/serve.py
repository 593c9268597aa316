"""Serving benchmark: latency p50/p95/p99 and videos/s at several concurrencies, 128 px x 25-frame mp4.

Two modes measure the same handler code (`serve.handler.VsynHandler`: decode -> animate -> encode):
- default: against a real TorchServe over HTTP with token auth. Without --run-dir it exports a randomly
  initialised sky128-sized generator, starts a private server on free ports, and stops it afterwards;
  with --run-dir it uses a server started by `vsyn serve start` (its model must be 128 px).
- --direct: no Java needed (GPU boxes): a dynamic batcher with TorchServe's semantics (up to --batch-size
  requests, waiting at most --max-batch-delay-ms) feeds the handler directly. --workers 1 (default): one handler
  in this process, fed by one batcher thread. --workers N > 1: N handler processes on the same device, as
  TorchServe's workers, taking batches from one shared request queue.

Each concurrency level is a closed loop: C clients, each sending its next request when the last one returns.
The table is printed and appended with machine, commit and command to bench/RESULTS.md.

    python bench/serve.py                    # CPU, TorchServe
    python bench/serve.py --direct --device cuda --batch-size 32
    python bench/serve.py --direct --device cuda --batch-size 32 --workers 4 --encoder-preset veryfast
"""

from __future__ import annotations

import argparse
import io
import itertools
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from PIL import Image

from record import RESULTS, append_report, provenance  # bench/record.py

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


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


@dataclass(frozen=True)
class HandlerSpec:
    """What a direct-mode worker needs to build its handler and requests (picklable: it crosses to spawned workers)."""

    model_dir: Path
    gpu_id: int | None
    batch_size: int
    max_delay_s: float
    request_headers: dict[str, str]  # X-Vsyn-* options sent with every request
    handler_options: dict[str, Any]  # the model-config handler section


def start_handler(spec: HandlerSpec) -> Any:
    """A VsynHandler initialised as TorchServe would: model load, CUDA graph capture and warm-up happen here."""
    from serve.handler import VsynHandler

    handler = VsynHandler()
    handler.initialize(_Context(spec.model_dir, spec.gpu_id, spec.handler_options, [], spec.batch_size))
    return handler


def collect_batch(get: Callable[..., T], batch_size: int, max_delay_s: float) -> list[T]:
    """TorchServe's batching: wait for one request, then take more until the batch is full or the delay is over.

    A None (shutdown) ends the batch early; it is the last item then.
    """
    batch = [get()]
    deadline = time.perf_counter() + max_delay_s
    while len(batch) < batch_size and batch[-1] is not None:
        try:
            batch.append(get(timeout=max(0.0, deadline - time.perf_counter())))
        except queue.Empty:
            break
    return batch


def serve_batch(handler: Any, spec: HandlerSpec, batch: list[tuple[bytes, int]]) -> list[tuple[bool, bytes | str]]:
    """One handler call for (image, seed) requests -> per request (ok, video bytes or error text).

    The handler's `last_batch` then holds (videos, generate ms, encode ms) of this call (one frame-count group).
    """
    handler.last_batch = None
    data = [{"body": bytearray(image)} for image, _ in batch]
    headers = [{"body": {"content-type": "image/png"}, **spec.request_headers, "x-vsyn-seed": str(seed)}
               for _, seed in batch]  # fmt: skip
    ctx = _Context(Path("."), None, {}, headers)
    try:
        out = handler.handle(data, ctx)
    except Exception as exc:  # noqa: BLE001 - reported to every client of the batch
        return [(False, f"handler failed: {exc!r}")] * len(batch)
    return [(i not in ctx.status, out[i]) for i in range(len(batch))]


def _settle(fut: Future, outcome: tuple[bool, bytes | str]) -> None:
    ok, payload = outcome
    if ok:
        fut.set_result(len(payload))
    else:
        fut.set_exception(RuntimeError(payload))


class DirectTarget:
    """--workers 1: the handler in this process, behind a TorchServe-like dynamic batcher (one worker thread)."""

    def __init__(self, spec: HandlerSpec):
        self.spec, self.handler = spec, start_handler(spec)
        self.timings: list[tuple[int, float, float]] = []  # (videos, generate ms, encode ms) per batch
        self.queue: queue.Queue[tuple[bytes, int, Future]] = queue.Queue()
        threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self) -> None:
        while True:
            batch = collect_batch(self.queue.get, self.spec.batch_size, self.spec.max_delay_s)
            outcomes = serve_batch(self.handler, self.spec, [(image, seed) for image, seed, _ in batch])
            if self.handler.last_batch:
                self.timings.append(self.handler.last_batch)
            for (_, _, fut), outcome in zip(batch, outcomes):
                _settle(fut, outcome)

    def __call__(self, image: bytes, seed: int) -> int:
        fut: Future = Future()
        self.queue.put((image, seed, fut))
        return fut.result()

    def take_timings(self) -> list[tuple[int, float, float]]:
        """The batches served since the last call: (videos, generate ms, encode ms) each."""
        taken, self.timings = self.timings, []
        return taken

    def close(self) -> None:
        pass  # daemon thread: ends with the process


def _worker_main(index: int, spec: HandlerSpec, requests: Any, results: Any, batch_lock: Any) -> None:
    """A spawned worker: build the handler, say ready (or why not), then serve batches until a None arrives.

    The batch lock is held while a batch fills, as TorchServe's Model.pollBatch holds one lock per model: batches
    form one after another, and an idle worker waits for the next one instead of stealing a filling batch's requests.
    """
    try:
        handler = start_handler(spec)
    except BaseException:  # noqa: BLE001 - the parent must hear about it, not wait forever
        results.put(("failed", index, traceback.format_exc()))
        return
    results.put(("ready", index, None))
    while True:
        with batch_lock:
            batch = collect_batch(requests.get, spec.batch_size, spec.max_delay_s)
        stop = batch[-1] is None
        batch = batch[:-1] if stop else batch
        if batch:
            outcomes = serve_batch(handler, spec, [(image, seed) for _, image, seed in batch])
            if handler.last_batch:  # before the results, so a level's last batch is counted in its level
                results.put(("timing", index, handler.last_batch))
            for (request_id, _, _), outcome in zip(batch, outcomes):
                results.put(("done", request_id, outcome))
        if stop:
            # A multiprocessing child joins its non-daemon children at exit: without this, the handler's encode
            # processes (still waiting for work) would hold the worker up until close() times out.
            handler.encoder.shutdown()
            return


class WorkerPoolTarget:
    """--workers N: N handler processes on one device sharing one request queue, like TorchServe's workers.

    Processes, not threads, as TorchServe's workers: several batches can be in flight (one encoding on the CPU while
    another runs on the GPU) without sharing one GIL. The constructor returns once every worker is initialised
    (model load, CUDA graph capture, warm-up), so start-up is never timed.
    """

    def __init__(self, spec: HandlerSpec, workers: int, start_timeout_s: float = 900.0):
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.requests, self.results = ctx.Queue(), ctx.Queue()
        batch_lock = ctx.Lock()
        # not daemons: a daemonic process may not have children, and a worker may have encode processes
        self.procs = [ctx.Process(target=_worker_main, args=(i, spec, self.requests, self.results, batch_lock),
                                  name=f"vsyn-worker-{i}") for i in range(workers)]  # fmt: skip
        self.pending: dict[int, Future] = {}
        self.timings: list[tuple[int, float, float]] = []  # (videos, generate ms, encode ms) per batch, all workers
        self.ids = itertools.count()
        self.lock = threading.Lock()
        for proc in self.procs:
            proc.start()
        try:
            self._wait_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self.dispatcher.start()

    def _dead(self) -> list[str]:
        return [f"{p.name} (exit code {p.exitcode})" for p in self.procs if p.exitcode is not None]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline, ready = time.monotonic() + timeout_s, set()
        while len(ready) < len(self.procs):
            try:
                kind, index, detail = self.results.get(timeout=1.0)
            except queue.Empty:
                if self._dead():
                    raise RuntimeError(f"worker exited during start-up: {', '.join(self._dead())}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(self.procs) - len(ready)} worker(s) not ready after {timeout_s:.0f} s")
                continue
            if kind == "failed":
                raise RuntimeError(f"worker {index} failed to start:\n{detail}")
            ready.add(index)

    def _dispatch(self) -> None:
        """Hand each result to its waiting client; if a worker dies, fail the waiting clients instead of hanging."""
        while True:
            try:
                message = self.results.get(timeout=1.0)
            except queue.Empty:
                if self._dead():
                    self._fail_pending(f"worker died: {', '.join(self._dead())}")
                    return
                continue
            if message is None:  # close()
                return
            kind, request_id, outcome = message
            if kind == "timing":
                with self.lock:
                    self.timings.append(outcome)
                continue
            with self.lock:
                fut = self.pending.pop(request_id)
            _settle(fut, outcome)

    def take_timings(self) -> list[tuple[int, float, float]]:
        """The batches served since the last call, by every worker: (videos, generate ms, encode ms) each."""
        with self.lock:
            taken, self.timings = self.timings, []
        return taken

    def _fail_pending(self, reason: str) -> None:
        with self.lock:
            futures, self.pending = list(self.pending.values()), {}
        for fut in futures:
            fut.set_exception(RuntimeError(reason))

    def __call__(self, image: bytes, seed: int) -> int:
        fut: Future = Future()
        with self.lock:
            request_id = next(self.ids)
            self.pending[request_id] = fut
        self.requests.put((request_id, image, seed))
        return fut.result()

    def close(self, timeout_s: float = 60.0) -> None:
        """One None per worker ends each after its current batch; stragglers are terminated."""
        for _ in self.procs:
            self.requests.put(None)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self.results.put(None)  # stops the dispatcher
        self.requests.cancel_join_thread()  # items left for dead workers must not block this process's exit


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


def batch_stats(timings: list[tuple[int, float, float]]) -> dict[str, float]:
    """Mean videos, generate ms and encode ms per handler batch (direct mode sees inside the handler)."""
    if not timings:
        return {}
    videos, generate, encode = (float(np.mean(column)) for column in zip(*timings))
    return {"batch": videos, "generate_ms": generate, "encode_ms": encode}


def table(rows: list[dict[str, float]]) -> str:
    inside = any("batch" in r for r in rows)
    extra = " mean batch | generate ms / batch | encode ms / batch |" if inside else ""
    lines = ["| concurrency | requests | p50 (ms) | p95 (ms) | p99 (ms) | throughput (videos/s) |" + extra,
             "|---:|---:|---:|---:|---:|---:|" + ("---:|" * 3 if inside else "")]  # fmt: skip
    for r in rows:
        cells = (f" {r['batch']:.1f} | {r['generate_ms']:.1f} | {r['encode_ms']:.1f} |" if "batch" in r
                 else " - | - | - |" if inside else "")  # fmt: skip
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
                     f"{r['videos_s']:.2f} |" + cells)  # fmt: skip
    return "\n".join(lines)


def handler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model-config handler section that direct mode hands its workers (HTTP mode exports the same values)."""
    return {"precision": args.precision, "cuda_graphs": args.cuda_graphs == "on",
            "encoder_preset": args.encoder_preset, "encode_threads": args.encode_threads,
            "torch_threads": args.torch_threads, "channels_last": args.channels_last,
            "encode_processes": args.encode_processes, "generate_chunk": args.generate_chunk}  # fmt: skip


Target = tuple[Callable[[bytes, int], int], Callable[[], Any], str]  # (send, stop, mode line)


def direct_target(args: argparse.Namespace, tmp_path: Path) -> Target:
    """(send, stop, mode) for --direct: one in-process handler, or --workers handler processes."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    spec = HandlerSpec(
        model_dir=make_snapshot(tmp_path, args.preset),
        gpu_id=(torch.device(device).index or 0) if device.startswith("cuda") else None,
        batch_size=args.batch_size,
        max_delay_s=args.max_batch_delay_ms / 1e3,
        request_headers={"x-vsyn-frames": str(args.frames), "x-vsyn-format": args.format},
        handler_options=handler_options(args),
    )
    started = time.perf_counter()
    if args.workers == 1:
        target: DirectTarget | WorkerPoolTarget = DirectTarget(spec)
        mode = f"direct (in-process handler + batcher), device {device}, 1 worker (thread)"
    else:
        target = WorkerPoolTarget(spec, args.workers)
        mode = (f"direct ({args.workers} handler worker processes, one shared request queue, TorchServe-like "
                f"batching), device {device}")  # fmt: skip
    print(f"{args.workers} worker(s) ready in {time.perf_counter() - started:.1f} s", flush=True)
    return target, target.close, mode


def http_target(args: argparse.Namespace, tmp_path: Path) -> Target:
    """(send, stop, mode) against TorchServe: a private server exported with this run's options, or --run-dir's."""
    from serve import server
    from serve.archive import ServingOptions, export
    from serve.config import ServerSettings

    if args.run_dir:
        settings = ServerSettings.load(args.run_dir)
        mode = f"TorchServe at {settings.url()} (existing server)"
        return HttpTarget(settings, args.frames, args.format), lambda: None, mode
    options = ServingOptions(batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay_ms,
                             min_workers=args.workers, max_workers=args.workers, precision=args.precision,
                             cuda_graphs=args.cuda_graphs == "on", encoder_preset=args.encoder_preset,
                             encode_threads=args.encode_threads, torch_threads=args.torch_threads,
                             channels_last=args.channels_last, encode_processes=args.encode_processes,
                             generate_chunk=args.generate_chunk)  # fmt: skip
    store = tmp_path / "store"
    export(make_snapshot(tmp_path, args.preset), store, options=options)
    ports = server.free_ports(5)
    # No front: TorchServe's own throughput, comparable with the rows measured before the front existed (and the
    # front's per-client limits would refuse this one client's 32 requests at once).
    settings = ServerSettings(model_store=store, run_dir=tmp_path / "run", inference_port=ports[0],
                              management_port=ports[1], metrics_port=ports[2],
                              grpc_inference_port=ports[3], grpc_management_port=ports[4], front="none")  # fmt: skip
    server.start(settings, wait_s=300)  # returns once the workers are READY: start-up is not timed
    mode = f"TorchServe over HTTP (private server, token auth on), {args.workers} worker(s)"
    return HttpTarget(settings, args.frames, args.format), lambda: server.stop(settings), mode


def serving_options(args: argparse.Namespace) -> str:
    """The knobs this run measured, for the report (an existing server's come from its own .mar)."""
    if args.run_dir and not args.direct:
        return "serving options as exported in that server's .mar"
    threads = args.encode_threads or "default (min(8, CPU count))"
    return (f"batch size {args.batch_size}, max batch delay {args.max_batch_delay_ms} ms, precision {args.precision}, "
            f"CUDA graphs {args.cuda_graphs}, x264 preset {args.encoder_preset}, encode threads {threads}, "
            f"torch threads {args.torch_threads or 'default (1 on GPU)'}"
            + (", channels_last" if args.channels_last else "")
            + (f", {args.encode_processes} encode processes per worker" if args.encode_processes else "")
            + (f", generated in chunks of {args.generate_chunk}" if args.generate_chunk else ""))  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vsyn.video import X264_PRESETS

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
    p.add_argument("--workers", type=int, default=1,
                   help="handler workers on the device: direct mode, 1 = in-process thread, N > 1 = N processes; "
                   "private TorchServe: min/max workers")
    p.add_argument("--device", default="auto", help="direct mode: auto | cpu | cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="handler precision")
    p.add_argument("--cuda-graphs", default="on", choices=("on", "off"), help="GPU: replay CUDA graphs (vsyn.graphs)")
    p.add_argument("--encoder-preset", default="medium", choices=X264_PRESETS, help="x264 preset for mp4")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch CPU threads per worker (0: handler default, 1 on GPU, torch's own on CPU)")
    p.add_argument("--encode-threads", type=int, default=0, help="videos encoded in parallel per worker (0: handler "
                   "default, min(8, CPU count))")
    p.add_argument("--encode-processes", type=int, default=0, help="encode in N processes per worker (0: threads)")
    p.add_argument("--channels-last", action="store_true", help="GPU: channels_last weights and activations")
    p.add_argument("--generate-chunk", type=int, default=0, help="generate each batch in chunks of N, encoding one "
                   "chunk while the next generates (0: the whole batch at once)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.workers < 1 or args.encode_threads < 0 or args.generate_chunk < 0:
        p.error("--workers must be >= 1, --encode-threads and --generate-chunk >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))  # before any vsyn/serve import; spawned workers inherit it
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    image = test_image()
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=os.environ.get("TMPDIR")) as tmp:
        send, stop, mode = (direct_target if args.direct else http_target)(args, Path(tmp))
        try:
            for seed in range(3):  # warm-up: lazy init, allocator, first connections
                send(image, seed)
            rows = []
            take_timings = getattr(send, "take_timings", list)  # direct mode only: TorchServe's handler is remote
            for c in args.concurrency:
                run_level(send, image, c, c)  # warm-up at this batch size (first call per shape is slow on CPU)
                take_timings()
                rows.append(run_level(send, image, c, args.requests or max(16, 2 * c)))
                rows[-1].update(batch_stats(take_timings()))
                print(f"concurrency {c}: p50 {rows[-1]['p50']:.0f} ms, {rows[-1]['videos_s']:.2f} videos/s", flush=True)
        finally:
            stop()

    report = "\n".join([
        f"## bench/serve.py: {args.preset} (random init), {args.frames} frames, {args.format} — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(load_before),
        f"- mode: {mode}; {serving_options(args)}; latency = request sent to video bytes received (closed loop)",
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
