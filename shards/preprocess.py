"""Turn one unit into finished samples: resample to the target fps, resize preserving aspect and centre-crop,
cut non-overlapping T-frame clips, drop static ones, encode. Runs in a packing worker process.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shards.frames import unit_frames, video_fps
from shards.layout import encode_sample
from shards.procedural import clip_seed, make_clip
from shards.sources import Unit

Sample = tuple[str, dict[str, bytes]]  # (key, members)


@dataclass(frozen=True)
class ClipOptions:
    size: int = 128
    frames: int = 25
    fps: float | None = None  # target rate; None keeps the source's
    source_fps: float = 25.0  # rate of image sequences (they carry none)
    layout: str = "npy"
    min_motion: float | None = None  # static filter off when None
    motion_gap: int = 5
    seed: int = 0  # procedural
    license: str = ""
    attribution: str = ""


def resample(frames: Iterable[tuple[int, float, object]], fps: float | None) -> Iterator[tuple[int, object]]:
    """Nearest-in-time source frame for each tick of a ``fps`` clock started at the first frame (drops frames
    when slowing down, repeats them when speeding up); ``None`` passes every frame through."""
    if fps is None:
        for index, _, frame in frames:
            yield index, frame
        return
    prev: tuple[int, float, object] | None = None
    t0, tick = 0.0, 0
    for index, t, frame in frames:
        if prev is None:
            t0 = t
        else:
            midpoint = (prev[1] + t) / 2
            while t0 + tick / fps < midpoint - 1e-9:
                yield prev[0], prev[2]
                tick += 1
        prev = (index, t, frame)
    if prev is not None:
        while t0 + tick / fps <= prev[1] + 1e-9:
            yield prev[0], prev[2]
            tick += 1


def fit(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the short side is ``size`` (aspect kept, no squashing), then crop the centre square."""
    return np.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5)))


def chunks(frames: Iterable[tuple[int, np.ndarray]], length: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """Non-overlapping runs of ``length`` frames; a shorter remainder is dropped."""
    indices: list[int] = []
    images: list[np.ndarray] = []
    for index, image in frames:
        indices.append(index)
        images.append(image)
        if len(images) == length:
            yield indices, np.stack(images)
            indices, images = [], []


def moving_share(video: np.ndarray, gap: int, threshold: int = 10) -> float:
    """Median over probe pairs ``gap`` frames apart of the share of pixels that change by more than ``threshold``
    (of 255) in some channel -- the original's curation test."""
    gap = min(gap, len(video) - 1)
    starts = np.unique(np.linspace(0, len(video) - 1 - gap, num=8).astype(int))
    shares = [(np.abs(video[s + gap].astype(np.int16) - video[s]).max(-1) > threshold).mean() for s in starts]
    return float(np.median(shares))


def _key(unit: Unit, n: int) -> str:
    """Tar-safe (no dots), unique, and readable: a slug of the video id, a hash of the unit, the clip number."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", unit.video_id)[-40:].strip("_") or "clip"
    digest = hashlib.sha1(f"{unit.video_id}|{unit.path}|{unit.start}|{unit.index}".encode()).hexdigest()[:8]
    return f"{slug}-{digest}-{n:05d}"


@dataclass
class UnitResult:
    samples: list[Sample]
    dropped: Counter  # clips dropped, by reason: short, static, unreadable
    error: str | None = None  # why the unit could not be read


def _procedural(unit: Unit, opts: ClipOptions) -> UnitResult:
    seed = clip_seed(opts.seed, unit.index, "test" if unit.split == "test" else "train")
    clip = make_clip(seed, opts.size, opts.frames)
    meta = {"source": "procedural", "video_id": unit.video_id, "seed": seed, "scene": clip["scene"],
            "fps": opts.fps or 25.0,
            "frame_indices": list(range(opts.frames)), "split": unit.split, "license": "CC0-1.0",
            "attribution": "vsyn procedural generator"}
    members = encode_sample(clip["video"], meta, opts.layout, flow=clip["flow"], mask=clip["mask"])
    return UnitResult([(_key(unit, 0), members)], Counter())


def unit_samples(unit: Unit, opts: ClipOptions) -> UnitResult:
    """All samples of one unit, plus what was dropped and why."""
    if unit.source == "procedural":
        return _procedural(unit, opts)
    dropped: Counter = Counter()
    samples: list[Sample] = []
    try:
        source_fps = video_fps(Path(unit.path)) if unit.source == "videos" else opts.source_fps
        fps = opts.fps or source_fps
        ticks = resample(unit_frames(unit, source_fps), opts.fps)
        for n, (indices, video) in enumerate(chunks(((i, fit(img, opts.size)) for i, img in ticks), opts.frames)):
            if opts.min_motion is not None and moving_share(video, opts.motion_gap) < opts.min_motion:
                dropped["static"] += 1
                continue
            meta = {"source": unit.source, "video_id": unit.video_id, "file": unit.path, "fps": fps,
                    "frame_indices": indices, "split": unit.split, "license": opts.license,
                    "attribution": opts.attribution}
            samples.append((_key(unit, n), encode_sample(video, meta, opts.layout)))
    except Exception as exc:  # one corrupt input costs that input, not the pack
        dropped["unreadable"] += 1
        return UnitResult([], dropped, f"{unit.path}: {type(exc).__name__}: {exc}")
    if not samples and not dropped:
        dropped["short"] += 1
    return UnitResult(samples, dropped)
