"""`vsyn export` and `vsyn serve start|stop|status`, contributed to the vsyn CLI through entry points."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serve.config import ServerSettings
from vsyn.errors import VsynError

DEFAULT_RUN_DIR = "runs/serve"


def register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="build a TorchServe .mar from a checkpoint",
        description="Package a checkpoint's EMA generator (safetensors + config), the vsyn handler and a "
        "model-config.yaml into <model-store>/<name>.mar.",
    )
    p.add_argument("checkpoint", help="snapshot dir, run dir (newest complete checkpoint) or .safetensors file")
    p.add_argument("--model-store", required=True, help="directory that receives <name>.mar")
    p.add_argument("--name", default="vsyn", help="model name, also the URL path /predictions/<name>")
    p.add_argument("--version", default="1.0", help="model version recorded in the archive")
    p.add_argument("--batch-size", type=int, default=8, help="max requests per generator call")
    p.add_argument("--max-batch-delay-ms", type=int, default=20, help="how long to wait to fill a batch")
    p.add_argument("--min-workers", type=int, default=1, help="worker processes TorchServe starts")
    p.add_argument("--max-workers", type=int, default=1, help="worker processes TorchServe may scale to")
    p.add_argument("--response-timeout", type=int, default=120, help="seconds per batch before TorchServe gives up")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="auto: GPU when present")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast where the device runs it fast (CUDA, AVX512-BF16/AMX CPUs)")
    p.add_argument("--encoder-preset", default="medium", metavar="PRESET",
                   help="x264 preset for mp4: ultrafast, superfast, veryfast, faster, fast, medium (default), slow, "
                   "slower, veryslow; faster presets use less CPU per video and give larger files")
    p.add_argument("--torch-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads per worker (default 0: 1 on a GPU, torch's own on CPU)")
    p.add_argument("--encode-processes", type=int, default=0, metavar="N",
                   help="encode each batch's videos in N processes per worker instead of threads (default 0: threads)")
    p.add_argument("--generate-chunk", type=int, default=0, metavar="N",
                   help="generate each batch in chunks of N videos, encoding one chunk while the next generates "
                   "(default 0: the whole batch in one call)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="on a GPU, run the generator in channels_last (NHWC) layout")
    p.add_argument("--max-frames", type=int, default=128, help="largest 'frames' a request may ask for")
    p.add_argument("--max-image-pixels", type=int, default=25_000_000, help="decompression-bomb cap per image")
    p.add_argument("--force", action="store_true", help="overwrite an existing .mar")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from serve.archive import ServingOptions, export
    from serve.protocol import Limits
    from vsyn.snapshot import resolve_snapshot

    # Checked before export() creates the model store, so a bad command leaves nothing behind.
    store = Path(args.model_store)
    if store.exists() and not store.is_dir():
        raise VsynError(f"--model-store '{store}' exists and is not a folder")
    resolve_snapshot(args.checkpoint)

    options = ServingOptions(
        batch_size=args.batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        response_timeout_s=args.response_timeout,
        device=args.device,
        precision=args.precision,
        encoder_preset=args.encoder_preset,
        torch_threads=args.torch_threads,
        channels_last=args.channels_last,
        encode_processes=args.encode_processes,
        generate_chunk=args.generate_chunk,
        limits=Limits(max_frames=args.max_frames, max_image_pixels=args.max_image_pixels),
    )
    path = export(args.checkpoint, args.model_store, name=args.name, version=args.version, options=options,
                  force=args.force)  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the TorchServe REST server (start | stop | status)",
        description="Start, stop or probe a TorchServe whose config, logs, keys and temp files live in --run-dir. "
        "REST contract: serve/README.md.",
    )
    actions = p.add_subparsers(dest="serve_command", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start", help="start TorchServe in the background and wait until the models are READY",
        description="Start TorchServe bound to --host with token auth on and model registration off; its config, "
        "key file, logs and temp files live in --run-dir. Returns once every model has READY workers.")
    start.add_argument("--model-store", required=True, help="directory with the .mar files (vsyn export)")
    start.add_argument("--model", action="append", metavar="NAME=FILE.mar",
                       help="a model to load; repeat for several (default: vsyn=vsyn.mar)")
    _run_dir_option(start)
    start.add_argument("--host", default="127.0.0.1", help="REST bind address (0.0.0.0 = all interfaces)")
    start.add_argument("--port", type=int, default=8080, help="inference port")
    start.add_argument("--management-port", type=int, default=8081, help="management API port")
    start.add_argument("--metrics-port", type=int, default=8082, help="Prometheus metrics port")
    start.add_argument("--grpc-host", default="127.0.0.1", help="gRPC bind address")
    start.add_argument("--grpc-port", type=int, default=7070, help="gRPC inference port")
    start.add_argument("--grpc-management-port", type=int, default=7071, help="gRPC management port")
    start.add_argument("--max-request-mib", type=int, default=16, help="largest request body in MiB")
    start.add_argument("--max-response-mib", type=int, default=256, help="largest video returned in MiB")
    start.add_argument("--wait", type=float, default=180.0, help="seconds to wait for READY workers")
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the server of --run-dir",
                              description="SIGTERM to the server's whole process group, SIGKILL after 30 s. "
                              "Prints 'not running' (exit 0) when there is nothing to stop.")
    _run_dir_option(stop)
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="health of the server of --run-dir as JSON (exit 0 when ready)",
                                description="Probe /ping and every model's workers; prints a JSON report. Exit "
                                "0 when every model has READY workers, 1 otherwise.")
    _run_dir_option(status)
    status.set_defaults(func=_status)


def _run_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="server state directory")


def _start(args: argparse.Namespace) -> int:
    from serve import server

    settings = ServerSettings(
        model_store=args.model_store,
        run_dir=args.run_dir,
        host=args.host,
        inference_port=args.port,
        management_port=args.management_port,
        metrics_port=args.metrics_port,
        grpc_host=args.grpc_host,
        grpc_inference_port=args.grpc_port,
        grpc_management_port=args.grpc_management_port,
        models=args.model or ["vsyn=vsyn.mar"],
        max_request_mib=args.max_request_mib,
        max_response_mib=args.max_response_mib,
    )
    health = server.start(settings, wait_s=args.wait)
    print(f"serving {', '.join(health.models)} at {settings.url()} (keys: {settings.key_file}, "
          f"logs: {settings.log_dir})")  # fmt: skip
    return 0


def _stop(args: argparse.Namespace) -> int:
    from serve import server

    print("stopped" if server.stop(ServerSettings.load(args.run_dir)) else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from serve import server

    settings = ServerSettings.load(args.run_dir)
    health = server.status(settings)
    report = {"url": settings.url(), "running": health.running, "healthy": health.healthy, "ready": health.ready,
              "models": health.models, "detail": health.detail}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0 if health.ready else 1
