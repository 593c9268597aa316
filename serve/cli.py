"""`vsyn export` and `vsyn serve start|stop|status`, contributed to the vsyn CLI through entry points."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serve.config import FRONTS, ServerSettings
from vsyn.errors import VsynError

DEFAULT_RUN_DIR = "runs/serve"
STATUS_KEY_EXIT = 3  # `vsyn serve status`: the server runs but its key expired


def register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="build a TorchServe .mar from a checkpoint",
        description="Package a checkpoint's EMA generator (safetensors + config), the vsyn handler and a "
        "model-config.yaml into <model-store>/<name>.mar.",
    )
    p.add_argument("checkpoint", help="snapshot dir, run dir (newest complete checkpoint) or .safetensors file")
    p.add_argument("--model-store", required=True, help="directory that receives <name>.mar")
    p.add_argument("--name", default="vsyn", help="model name, also the URL path /predictions/<name> (default vsyn)")
    p.add_argument("--version", default="1.0", help="model version recorded in the archive (default 1.0)")
    p.add_argument("--batch-size", type=int, default=8, help="max requests per generator call (default 8)")
    p.add_argument("--max-batch-delay-ms", type=int, default=20, help="how long to wait to fill a batch (default 20)")
    p.add_argument("--min-workers", type=int, default=1, help="worker processes TorchServe starts (default 1)")
    p.add_argument("--max-workers", type=int, default=1, help="worker processes TorchServe may scale to (default 1)")
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
    p.add_argument("--max-video-pixels", type=int, default=None,
                   help="cost cap per request: output width x height x frames (default 67108864 = 2^26)")
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
        limits=Limits(max_frames=args.max_frames, max_image_pixels=args.max_image_pixels,
                      max_video_pixels=args.max_video_pixels or Limits.max_video_pixels),
    )
    path = export(args.checkpoint, args.model_store, name=args.name, version=args.version, options=options,
                  force=args.force)  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the REST server: nginx front + TorchServe (start | stop | status | token)",
        description="Start, stop or probe a server (TorchServe behind an nginx front) whose config, logs, keys and "
        "temp files live in --run-dir; `token` renews its keys now. REST contract: serve/README.md.",
    )
    actions = p.add_subparsers(dest="serve_command", metavar="ACTION", required=True)

    start = actions.add_parser(
        "start", help="start the server in the background and wait until the models are READY",
        description="Start TorchServe with token auth on and model registration off, behind an nginx front (or "
        "alone with --front none); its config, key file, logs and temp files live in --run-dir. Returns once every "
        "model has READY workers.")
    start.add_argument("--model-store", required=True, help="directory with the .mar files (vsyn export)")
    start.add_argument("--model", action="append", metavar="NAME=FILE.mar",
                       help="a model to load; repeat for several (default: vsyn=vsyn.mar)")
    _run_dir_option(start)
    start.add_argument("--host", default="127.0.0.1", help="public bind address (0.0.0.0 = all interfaces)")
    start.add_argument("--port", type=int, default=8080, help="public inference port")
    start.add_argument("--management-port", type=int, default=8081, help="management API port")
    start.add_argument("--metrics-port", type=int, default=8082, help="Prometheus metrics port")
    start.add_argument("--grpc-host", default="127.0.0.1", help="gRPC bind address")
    start.add_argument("--grpc-port", type=int, default=7070, help="gRPC inference port")
    start.add_argument("--grpc-management-port", type=int, default=7071, help="gRPC management port")
    start.add_argument("--grpc", action="store_true",
                       help="serve predictions over gRPC too (one request per batch; otherwise gRPC calls are refused)")
    start.add_argument("--max-request-mib", type=int, default=16, help="largest request body in MiB")
    start.add_argument("--max-response-mib", type=int, default=256, help="largest video returned in MiB")
    start.add_argument("--front", choices=FRONTS, default="nginx",
                       help="nginx: nginx faces clients, TorchServe listens on 127.0.0.1; none: TorchServe faces "
                       "clients itself (no timeouts, no per-client limits, no drain on stop)")
    start.add_argument("--backend-port", type=int, default=8083, help="TorchServe's port on 127.0.0.1 behind the front")
    start.add_argument("--tls-cert", help="PEM certificate (chain): the front speaks HTTPS")
    start.add_argument("--tls-key", help="PEM private key of --tls-cert")
    start.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a whole request header")
    start.add_argument("--body-timeout", type=float, default=10.0, help="longest pause in a request body, s")
    start.add_argument("--idle-timeout", type=float, default=15.0, help="keep-alive idle timeout, s")
    start.add_argument("--send-timeout", type=float, default=30.0, help="longest pause writing a response, s")
    start.add_argument("--connections-per-client", type=int, default=8,
                       help="requests in progress per client address (one batch of the default size; 0: no limit)")
    start.add_argument("--rate-per-client", type=float, default=10.0,
                       help="requests/s per client address (0: no limit); above it: 429")
    start.add_argument("--burst-per-client", type=int, default=20, help="requests above the rate served at once")
    start.add_argument("--token-expiration-min", type=float, default=60.0,
                       help="key lifetime in minutes; keys are renewed at half-life")
    start.add_argument("--renew-keys", action=argparse.BooleanOptionalAction, default=True,
                       help="renew the keys at half-life while the server runs")
    start.add_argument("--log-max-mib", type=float, default=32.0, help="rotate each log file at this size (MiB)")
    start.add_argument("--log-backups", type=int, default=5, help="rotated copies kept per log")
    start.add_argument("--drain", type=float, default=60.0,
                       help="seconds in-flight requests get to finish when the server is stopped")
    start.add_argument("--wait", type=float, default=180.0, help="seconds to wait for READY workers")
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the server of --run-dir, draining requests in flight",
                              description="Stop accepting, let requests in flight finish (up to --drain seconds), "
                              "then stop the server's whole process group. Prints 'not running' (exit 0) when there "
                              "is nothing to stop.")
    _run_dir_option(stop)
    stop.add_argument("--drain", type=float, default=None,
                      help="seconds in-flight requests get to finish (default: as given at start, 60)")
    stop.set_defaults(func=_stop)

    status = actions.add_parser("status", help="health of the server of --run-dir as JSON (exit 0 when ready)",
                                description="Probe /ping and every model's workers; prints a JSON report with a "
                                "state. Exit 0 when every model has READY workers, "
                                f"{STATUS_KEY_EXIT} when the server runs but refuses the key (expired: renew it "
                                "with `vsyn serve token`), 1 otherwise.")
    _run_dir_option(status)
    status.set_defaults(func=_status)

    token = actions.add_parser("token", help="renew the server's keys now",
                               description="Renew the management and inference keys of the server of --run-dir "
                               "(the old ones stop working at once); clients re-read its key file.")
    _run_dir_option(token)
    token.set_defaults(func=_token)


def _run_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"server state directory (default {DEFAULT_RUN_DIR})")


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
        token_expiration_min=args.token_expiration_min,
        renew_keys=args.renew_keys,
        grpc=args.grpc,
        front=args.front,
        backend_port=args.backend_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        idle_timeout_s=args.idle_timeout,
        send_timeout_s=args.send_timeout,
        connections_per_client=args.connections_per_client,
        rate_per_client=args.rate_per_client,
        burst_per_client=args.burst_per_client,
        drain_s=args.drain,
        log_max_mib=args.log_max_mib,
        log_backups=args.log_backups,
    )
    health = server.start(settings, wait_s=args.wait)
    print(f"serving {', '.join(health.models)} at {settings.url()} (keys: {settings.key_file}, "
          f"logs: {settings.log_dir})")  # fmt: skip
    return 0


def _stop(args: argparse.Namespace) -> int:
    from serve import server

    print("stopped" if server.stop(ServerSettings.load(args.run_dir), drain_s=args.drain) else "not running")
    return 0


def _token(args: argparse.Namespace) -> int:
    from serve import server

    settings = ServerSettings.load(args.run_dir)
    for kind, expires in server.renew_keys(settings).items():
        print(f"renewed the {kind} key (expires {expires}); clients re-read {settings.key_file}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from serve import server

    settings = ServerSettings.load(args.run_dir)
    health = server.status(settings)
    report = {"url": settings.url(), "state": health.state, "running": health.running, "healthy": health.healthy,
              "ready": health.ready, "models": health.models, "detail": health.detail}  # fmt: skip
    print(json.dumps(report, indent=2))
    # 0 ready, STATUS_KEY_EXIT running but refusing our key (expired: renew with `vsyn serve token`), 1 anything else
    return 0 if health.ready else STATUS_KEY_EXIT if health.state == server.KEY_EXPIRED else 1
