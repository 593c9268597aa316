"""Look at the data before a run builds anything: is it readable, and how big are its clips?

Reading one sample of the first readable shard costs a fraction of a second, and turns a wrong `data.train` into
one clear error before the networks are built and before the run dir is written -- instead of a fault count after
the start-up. The clip size says how the loader will fit clips to the model: unchanged, resized (aspect kept,
`vsyn.data.clips.fit`), randomly cropped (data.random_crop), or refused when smaller than the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from vsyn.data.decode import decode_video, metadata
from vsyn.data.faults import FaultLog
from vsyn.data.samples import read_shard
from vsyn.data.urls import resolve
from vsyn.errors import VsynError

PROBE_SHARDS = 3  # shards tried before giving up


def clip_size(data: str | os.PathLike | Sequence[str]) -> tuple[int, int]:
    """(height, width) of the first readable clip behind `data`; VsynError naming the first faults if none is."""
    shards = resolve(data)
    faults = FaultLog([s.url for s in shards], limit=1 << 62)
    for shard in shards[:PROBE_SHARDS]:
        with contextlib.closing(read_shard(shard, faults)) as samples:
            for sample in samples:
                try:
                    meta = metadata(sample)
                    if "size" in meta:
                        height, width = meta["size"]
                        return int(height), int(width)
                    return tuple(decode_video(sample, meta, [0]).shape[1:3])  # type: ignore[return-value]
                except Exception as exc:  # an undecodable sample: say so, try the next
                    faults.add(f"{sample['__url__']}#{sample['__key__']}", f"{type(exc).__name__}: {exc}")
    shown = "; ".join(f"{url}: {reason}" for url, reason in faults.pending[:3])
    where = data if isinstance(data, (str, os.PathLike)) else ", ".join(map(str, data))
    raise VsynError(f"no readable clips in {where}: {shown or 'no samples'}")


def fit_note(size: tuple[int, int], resolution: int, random_crop: bool, key: str = "model.resolution") -> str | None:
    """The one line that says how clips of `size` meet a model of `resolution` (None when they match)."""
    height, width = size
    if (height, width) == (resolution, resolution):
        return None
    if min(height, width) < resolution:
        raise VsynError(f"the clips are {height}x{width} px, smaller than {key}={resolution}: pack them with "
                        f"--size {resolution} or more (clips are never upscaled)")
    if random_crop:
        return f"clips are {height}x{width} px, {key}={resolution}: random {resolution}x{resolution} crops " \
               "(data.random_crop=true)"
    return f"clips are {height}x{width} px, {key}={resolution}: every frame is resized to {resolution} px on its " \
           "short side (aspect kept), then centre-cropped"
