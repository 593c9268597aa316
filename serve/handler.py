"""TorchServe handler for vsyn: request -> `vsyn.inference.animate` -> encoded video. No model code lives here.

TorchServe hands us a batch (up to `batchSize` requests gathered within `maxBatchDelay`). Each request is parsed
on its own, so one bad request gets its own 4xx and never fails its batch mates; the valid ones are grouped by
frame count (one generator call per group, seeds per video) and encoded one by one in the format each asked for.

The .mar's files form a vsyn snapshot (config.json, generator_ema.safetensors, meta.json), so the model dir
loads with `load_generator` as is. This file is copied into the .mar and imported by TorchServe as a top-level
module, so it defines exactly one class and reaches everything else through the installed `serve` and `vsyn`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.protocol import Limits, RequestError, VideoRequest, parse_request, resize_video
from vsyn.inference import animate, load_generator
from vsyn.video import encode_video

log = logging.getLogger(__name__)

class VsynHandler:
    def __init__(self) -> None:
        self.generator: torch.nn.Module | None = None
        self.resolution = 0
        self.default_frames = 0
        self.limits = Limits()
        self.encoder: ThreadPoolExecutor | None = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        gpu_id = props.get("gpu_id")
        use_gpu = torch.cuda.is_available() and gpu_id is not None
        device = torch.device(f"cuda:{gpu_id}" if use_gpu else "cpu")
        self.generator, cfg = load_generator(Path(props["model_dir"]), ema=True, device=device)
        self.resolution, self.default_frames = cfg.model.resolution, cfg.model.frames
        options = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        self.limits = Limits.from_mapping(options)
        # Encoders are single-threaded (deterministic bytes) and release the GIL: encode a batch's videos in parallel.
        threads = int(options.get("encode_threads", 0)) or min(8, os.cpu_count() or 1)
        self.encoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        # One throw-away call so the first client does not pay for lazy kernel, allocator and codec set-up.
        warm = animate(self.generator, np.zeros((1, self.resolution, self.resolution, 3), np.uint8), num_frames=2)
        encode_video(warm[0], fmt="mp4")
        self.initialized = True
        log.info("vsyn generator %s on %s, limits %s", cfg.name, device, self.limits)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes | str]:
        responses: list[bytes | str] = [b""] * len(data)
        parsed: dict[int, VideoRequest] = {}
        for i, fields in enumerate(data):
            try:
                parsed[i] = parse_request(
                    fields,
                    context.get_all_request_header(i),
                    resolution=self.resolution,
                    default_frames=self.default_frames,
                    limits=self.limits,
                )
            except RequestError as exc:
                responses[i] = self._error(context, i, exc.status, exc.phrase, exc.body())
        groups: dict[int, list[int]] = defaultdict(list)
        for i, req in parsed.items():
            groups[req.frames].append(i)
        for frames, idxs in groups.items():
            try:
                self._generate(frames, [parsed[i] for i in idxs], idxs, context, responses)
            except Exception:  # noqa: BLE001 - the worker must survive anything; the client gets a 500
                log.exception("generation failed for a group of %d requests", len(idxs))
                for i in idxs:
                    body = json.dumps({"code": 500, "type": "InternalServerError", "message": "generation failed"})
                    responses[i] = self._error(context, i, 500, "Internal Server Error", body)
        return responses

    def _generate(
        self, frames: int, reqs: list[VideoRequest], idxs: list[int], context: Any, responses: list[bytes | str]
    ) -> None:
        start = time.perf_counter()
        images = np.stack([r.image for r in reqs])
        mask = None
        if any(r.mask is not None for r in reqs):  # unmasked batch mates get "everything may move"
            ones = np.ones((1, self.resolution, self.resolution), np.float32)
            mask = np.stack([r.mask if r.mask is not None else ones for r in reqs])
        videos = animate(self.generator, images, num_frames=frames, seeds=[r.seed for r in reqs], mask=mask)
        generated = time.perf_counter()
        encoded = self.encoder.map(_encode, reqs, videos)
        for i, req, data in zip(idxs, reqs, encoded):
            responses[i] = data
            context.set_response_content_type(i, req.content_type)
            context.set_response_header(i, "X-Vsyn-Seed", str(req.seed))  # lets a client reproduce a random one
            context.set_response_header(i, "X-Vsyn-Batch-Size", str(len(reqs)))  # observability: was it batched?
        log.debug(
            "batch of %d x %d frames: generate %.0f ms, encode %.0f ms",
            len(reqs), frames, 1e3 * (generated - start), 1e3 * (time.perf_counter() - generated),
        )  # fmt: skip

    @staticmethod
    def _error(context: Any, i: int, status: int, phrase: str, body: str) -> str:
        context.set_response_status(status, phrase, idx=i)
        context.set_response_content_type(i, "application/json")
        return body


def _encode(req: VideoRequest, video: np.ndarray) -> bytes:
    return encode_video(resize_video(video, req.out_size), fps=req.fps, fmt=req.fmt)
