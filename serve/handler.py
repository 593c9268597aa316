"""TorchServe handler for vsyn: request -> `vsyn.inference.animate` -> encoded video. No model code lives here.

TorchServe hands us a batch (up to `batchSize` requests gathered within `maxBatchDelay`). Each request is parsed
on its own, so one bad request gets its own 4xx and never fails its batch mates; the valid ones are grouped by
frame count (one generator call per group, seeds per video) and encoded in parallel, each in its own format.

Two things TorchServe hides from a handler are recovered here. It keeps one value per form field (the last), so
`initialize` wraps its request decoding to note names a request sent twice, which `parse_request` then refuses.
And it tells a gRPC client about a handler's refusal only when the whole batch fails (a per-request status reaches
REST clients only): a request that came over gRPC (it carries no HTTP headers) is refused unless the server runs
with gRPC on, and a batch made only of refused gRPC requests is failed as a whole, with the refusal's status,
which TorchServe maps to a gRPC code. With gRPC on the server batches one request at a time, so that is every
refusal.

The .mar's files form a vsyn snapshot (config.json, generator_ema.safetensors, meta.json), so the model dir
loads with `load_generator` as is. This file is copied into the .mar and imported by TorchServe as a top-level
module, so it defines exactly one class and reaches everything else through the installed `serve` and `vsyn`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.config import GRPC_ENV
from serve.encode_pool import encode_pool, resize_and_encode
from serve.protocol import DUPLICATES_KEY, Limits, RequestError, VideoRequest, error_body, parse_request
from vsyn.errors import VsynError
from vsyn.graphs import GraphedGenerator
from vsyn.inference import animate, animate_photo, is_motion_model, load_generator
from vsyn.nn.layers import to_channels_last
from vsyn.video import encode_chunks, encode_video, x264_preset

log = logging.getLogger(__name__)


class VsynHandler:
    def __init__(self) -> None:
        self.generator: torch.nn.Module | None = None  # what `animate` calls: the module or its CUDA-graph replayer
        self.model: torch.nn.Module | None = None  # the module itself
        self.motion = False  # the model has the motion head: size=input warps the photo itself, loops are possible
        self.resolution = 0
        self.default_frames = 0
        self.limits = Limits()
        self.encoder: Executor | None = None
        self.device = torch.device("cpu")
        self.autocast: torch.dtype | None = None  # None: plain fp32
        self.encoder_preset = x264_preset(None)
        self.last_batch: tuple[int, float, float] | None = None  # (videos, generate ms, encode ms) of the last group
        self.grpc = False  # serve requests that arrive over gRPC (`vsyn serve start --grpc`)
        self.initialized = False

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        gpu_id = props.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        device = self.device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        yaml_config = getattr(context, "model_yaml_config", None) or {}  # model-config.yaml (vsyn export)
        options = yaml_config.get("handler") or {}
        # On a GPU one CPU thread suffices for torch: N workers x a full intra-op pool oversubscribed the host's
        # cores and starved the encoders (load average 5x the core count with 8 workers).
        torch_threads = int(options.get("torch_threads", 0)) or (1 if use_gpu else 0)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.generator, cfg = load_generator(Path(props["model_dir"]), ema=True, device=device)
        self.model = self.generator  # the module itself: full-resolution motion requests call its motion_fields
        self.motion = is_motion_model(self.generator)
        self.resolution, self.default_frames = cfg.model.resolution, cfg.model.frames
        self.limits = Limits.from_mapping(options)
        self.grpc = os.environ.get(GRPC_ENV) == "1"
        _watch_duplicates()
        # > 0: generate a group in chunks of this many videos, each chunk's encodes running while the next generates
        self.generate_chunk = int(options.get("generate_chunk", 0))
        if self.generate_chunk < 0:
            raise VsynError(f"generate_chunk must be >= 0 (0: the whole batch at once), not {self.generate_chunk}")
        # Encoders are single-threaded (deterministic bytes): encode a batch's videos in parallel. Threads share the
        # GIL, which PyAV holds for part of each frame (measured: 2 threads gave 1.2x with ultrafast, 1.6x with
        # veryfast); encode_processes > 0 uses a pool of spawned processes instead (frames pickled over, ~1 MB).
        threads = int(options.get("encode_threads", 0)) or min(8, os.cpu_count() or 1)
        processes = int(options.get("encode_processes", 0))
        if processes > 0:
            self.encoder = encode_pool(processes)
        else:
            self.encoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self.autocast = _autocast_dtype(str(options.get("precision", "auto")), device)
        self.encoder_preset = x264_preset(options.get("encoder_preset"))  # mp4 only; x264 is the CPU cost per video
        self.channels_last = device.type == "cuda" and _flag(options.get("channels_last", False))
        if self.channels_last:  # NHWC all the way: no layout transposes around each cuDNN call
            to_channels_last(self.generator)
        if device.type == "cuda" and _flag(options.get("cuda_graphs", True)):
            # Replay captured CUDA graphs (vsyn.graphs): the generator is launch-bound at serving batch sizes.
            # Every batch bucket up to TorchServe's batchSize is captured now, at the default frame count.
            graphed = GraphedGenerator(self.generator, max_batch=max(1, int(yaml_config.get("batchSize", 1))))
            graphed.capture_buckets(self.default_frames, device, self.autocast)
            self.generator = graphed
        # One throw-away call so the first client does not pay for lazy kernel, allocator and codec set-up.
        with self._precision():
            warm = animate(self.generator, np.zeros((1, self.resolution, self.resolution, 3), np.uint8), num_frames=2)
        for job in [self.encoder.submit(encode_video, warm[0], fmt="mp4", preset=self.encoder_preset)
                    for _ in range(max(processes, 1))]:  # starts every encode process now, not at the first request
            job.result()
        self.initialized = True
        log.info(
            "vsyn generator %s on %s (%s%s, %d torch threads, %s, x264 preset %s, gRPC %s), limits %s",
            cfg.name, device, self.autocast or "fp32", ", channels_last" if self.channels_last else "",
            torch.get_num_threads(), f"{processes} encode processes" if processes > 0 else f"{threads} encode threads",
            self.encoder_preset, "on" if self.grpc else "off", self.limits,
        )  # fmt: skip

    def _precision(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes | str]:
        responses: list[bytes | str] = [b""] * len(data)
        failed: dict[int, RequestError] = {}  # index -> refusal or failure, for the gRPC verdict below
        via_grpc = [_via_grpc(context.get_all_request_header(i)) for i in range(len(data))]
        # (frame count, full resolution) -> requests: full-resolution motion requests render one by one
        groups: dict[tuple[int, bool], list[tuple[int, VideoRequest]]] = defaultdict(list)
        for i, fields in enumerate(data):
            try:
                if via_grpc[i] and not self.grpc:
                    raise RequestError(403, "gRPC is off on this server (start it with `vsyn serve start --grpc`)")
                req = parse_request(
                    fields,
                    context.get_all_request_header(i),
                    resolution=self.resolution,
                    default_frames=self.default_frames,
                    limits=self.limits,
                    motion=self.motion,
                )
            except RequestError as exc:
                failed[i] = exc
                continue
            except Exception:  # noqa: BLE001 - an input we did not foresee: fail this request, not the batch
                log.exception("could not parse request %d", i)
                failed[i] = RequestError(500, "could not process the request")
                continue
            groups[(req.frames, req.photo is not None)].append((i, req))
        _fail_grpc_batch(failed, via_grpc)
        for (frames, full_res), members in groups.items():
            idxs, reqs = [i for i, _ in members], [r for _, r in members]
            try:
                videos = self._warp_photos(frames, reqs) if full_res else self._generate(frames, reqs)
            except Exception:  # noqa: BLE001 - the worker must survive anything; these clients get a 500
                log.exception("generation failed for a group of %d requests", len(reqs))
                for i in idxs:
                    failed[i] = RequestError(500, "generation failed")
                continue
            for i, req, video in zip(idxs, reqs, videos):
                responses[i] = video
                context.set_response_content_type(i, req.content_type)
                context.set_response_header(i, "X-Vsyn-Seed", str(req.seed))  # lets a client reproduce a random one
                context.set_response_header(i, "X-Vsyn-Batch-Size", str(len(reqs)))  # observability: batched?
        _fail_grpc_batch(failed, via_grpc)
        for i, exc in failed.items():
            responses[i] = self._error(context, i, exc.status, exc.phrase, exc.message)
        return responses

    def _generate(self, frames: int, reqs: list[VideoRequest]) -> list[bytes]:
        """Generator calls for requests of equal length, their videos encoded in parallel.

        One call for the whole group, or with `generate_chunk` one per chunk, each chunk's encodes submitted before
        the next chunk generates: the encoder pool works while the GPU does, instead of after it. `last_batch`
        keeps the generate time and the rest (encodes not hidden behind generation).
        """
        start = time.perf_counter()
        chunk = self.generate_chunk or len(reqs)
        generating, jobs = 0.0, []
        for lo in range(0, len(reqs), chunk):
            part = reqs[lo:lo + chunk]
            t0 = time.perf_counter()
            videos = self._animate(frames, part)
            generating += time.perf_counter() - t0
            jobs += [self.encoder.submit(resize_and_encode, video, req.out_size, fps=req.fps, fmt=req.fmt,
                                         preset=self.encoder_preset) for req, video in zip(part, videos)]  # fmt: skip
        encoded = [job.result() for job in jobs]
        total = time.perf_counter() - start
        self.last_batch = (len(reqs), 1e3 * generating, 1e3 * (total - generating))
        log.debug("batch of %d x %d frames: generate %.0f ms, encode %.0f ms", len(reqs), frames, *self.last_batch[1:])
        return encoded

    def _warp_photos(self, frames: int, reqs: list[VideoRequest]) -> list[bytes]:
        """Motion head, size=input: each photo warped at its own size (long side capped), rendered and encoded in
        frame chunks as `vsyn animate` does, so memory stays bounded by a chunk whatever the photo's size."""
        videos = []
        for req in reqs:
            with self._precision():
                (h, w), chunks = animate_photo(self.model, req.photo, num_frames=frames, seed=req.seed,
                                               size=req.render_size,
                                               max_side=self.limits.max_side, loop=req.loop, mask=req.photo_mask)
                assert (w, h) == req.out_size, ((w, h), req.out_size)  # what the cost cap was checked against
                videos.append(encode_chunks(chunks, fps=req.fps, fmt=req.fmt, preset=self.encoder_preset))
        return videos

    def _animate(self, frames: int, reqs: list[VideoRequest]) -> np.ndarray:
        images = np.stack([r.image for r in reqs])
        mask = None
        if any(r.mask is not None for r in reqs):  # unmasked batch mates get "everything may move"
            ones = np.ones((1, self.resolution, self.resolution), np.float32)
            mask = np.stack([r.mask if r.mask is not None else ones for r in reqs])
        with self._precision():
            return animate(self.generator, images, num_frames=frames, seeds=[r.seed for r in reqs], mask=mask)

    @staticmethod
    def _error(context: Any, i: int, status: int, phrase: str, message: str) -> str:
        """Per-request status and a JSON body in TorchServe's own error shape; batch mates are unaffected."""
        context.set_response_status(status, phrase, idx=i)
        context.set_response_content_type(i, "application/json")
        return error_body(status, phrase, message)


def _via_grpc(headers: dict[str, Any]) -> bool:
    """A request that came over gRPC: TorchServe gives it no HTTP headers, only its parameters' entries (dicts).
    Every REST request has some (token auth alone needs Authorization)."""
    return not any(isinstance(value, str) for value in headers.values())


def _fail_grpc_batch(failed: dict[int, RequestError], via_grpc: list[bool]) -> None:
    """A batch of gRPC requests that all failed alike fails as a whole, with their status: TorchServe then gives
    each gRPC client the status mapped to a gRPC code (400 INVALID_ARGUMENT, 403 PERMISSION_DENIED, 413
    RESOURCE_EXHAUSTED, 500 INTERNAL, other 4xx FAILED_PRECONDITION) and the message, instead of status OK with the
    JSON refusal as its "prediction". Any other batch answers request by request."""
    if not failed or len(failed) < len(via_grpc) or not all(via_grpc) or len({e.status for e in failed.values()}) > 1:
        return
    from ts.utils.util import PredictionException

    exc = next(iter(failed.values()))
    raise PredictionException(exc.message, exc.status)


def _watch_duplicates() -> None:
    """Make TorchServe's request decoding note the names a request sent more than once.

    TorchServe's worker turns each request's parameters (form fields) and headers into dicts, keeping the last of
    two equal names; `parse_request` should refuse such a request instead. This wraps that one static method of the
    worker (TorchServe 0.12 is its last release) and puts the repeated names under `DUPLICATES_KEY` in the
    request's headers. Outside a TorchServe worker it does nothing.
    """
    try:
        from ts.service import Service
    except ImportError:
        return
    original = Service.retrieve_data_for_inference
    if getattr(original, "vsyn_duplicates", False):
        return

    def retrieve_data_for_inference(batch):  # noqa: ANN001, ANN202 - TorchServe's signature
        headers, inputs, ids = original(batch)
        for request, processor in zip(batch or [], headers):
            repeated = _repeated_names(request)
            if repeated:
                processor.get_request_properties()[DUPLICATES_KEY] = repeated
        return headers, inputs, ids

    retrieve_data_for_inference.vsyn_duplicates = True
    Service.retrieve_data_for_inference = staticmethod(retrieve_data_for_inference)


def _repeated_names(request: dict[str, Any]) -> list[tuple[str, str]]:
    """[(kind, name)] of the form fields and option headers a raw TorchServe request carries more than once."""
    out, fields, heads = [], set(), set()
    for parameter in request.get("parameters") or []:
        name = parameter.get("name")
        if name in fields:
            out.append(("form field", name))
        fields.add(name)
    for header in request.get("headers") or []:
        name = header.get("name", b"")
        name = (name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name)).lower()
        if name.startswith("x-vsyn-") or name == "content-type":
            if name in heads:
                out.append(("header", name))
            heads.add(name)
    return out


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32.

    Measured on the sky128 generator: ~1.5x faster on a 2-core AVX512-BF16 CPU; outputs differ from fp32 by at
    most 2/255 (mean 0.08/255) and stay deterministic, so "same seed, same bytes" holds per precision.
    """
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.bfloat16 if precision == "bf16" or fast else None
