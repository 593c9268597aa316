"""Stream the frames of one unit as ``(source index, time in seconds, PIL image)``, decoding lazily.

Videos are decoded with PyAV one frame at a time (a ten-minute video never sits in memory), seeking to a CSV row's
start; image folders are read in natural order at a stated frame rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
from PIL import Image

from shards.sources import Unit, image_files

Frame = tuple[int, float, Image.Image]


def image_sequence(folder: Path, fps: float) -> Iterator[Frame]:
    for i, path in enumerate(image_files(folder)):
        with Image.open(path) as img:
            yield i, i / fps, img.convert("RGB")


def video_frames(path: Path, start: float | None, end: float | None) -> Iterator[Frame]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start:
            # Seek lands on the keyframe at or before `start`; frames before it are dropped below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        rate = float(stream.average_rate or 25)
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / rate
            if start is not None and t < start - 1e-6:
                continue
            if end is not None and t >= end - 1e-6:
                break
            yield round(t * rate), t, frame.to_image()  # the frame's index in the whole video, also after a seek


def video_fps(path: Path) -> float:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def unit_frames(unit: Unit, source_fps: float) -> Iterator[Frame]:
    if unit.source == "videos":
        return video_frames(Path(unit.path), unit.start, unit.end)
    return image_sequence(Path(unit.path), source_fps)
