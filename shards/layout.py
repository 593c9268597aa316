"""How one clip becomes the members of one WebDataset sample (the reader in ``vsyn.data.decode`` is the inverse).

Layouts (``shards/README.md`` has the benchmark behind the choice):
  npy  raw ``<key>.frames.npy`` uint8 (T,H,W,3) -- the default: no decode cost, the only layout that meets the
       throughput targets (>= 10x the original's reader, >= 100 clips/s per core at 128 px); ~35x mp4's bytes
  mp4  one H.264 ``<key>.mp4`` per clip (CRF 17) -- the compact choice for remote storage (~35 kB per 128 px clip)
  jpg  one ``<key>.<i>.jpg`` (quality 95) per frame -- lets a reader decode only the frames it takes
Every sample also holds ``<key>.json`` metadata, and procedural ones ``<key>.flow.npy`` (float16) and
``<key>.mask.npy`` (uint8).
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from vsyn.video import encode_video

LAYOUTS = ("npy", "mp4", "jpg")
JPEG_QUALITY = 95


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def encode_sample(
    video: np.ndarray,
    meta: dict,
    layout: str = "npy",
    *,
    flow: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, bytes]:
    """Members (suffix -> bytes, key not included) for a uint8 (T,H,W,3) clip and its metadata."""
    t, h, w, _ = video.shape
    meta = {**meta, "num_frames": t, "size": [h, w], "layout": layout}
    members = {"json": json.dumps(meta, sort_keys=True).encode()}
    if layout == "mp4":
        members["mp4"] = encode_video(video, fps=float(meta.get("fps", 25.0)), fmt="mp4")
    elif layout == "jpg":
        width = max(3, len(str(t - 1)))
        members.update({f"{i:0{width}d}.jpg": _jpeg(frame) for i, frame in enumerate(video)})
    elif layout == "npy":
        members["frames.npy"] = _npy(video)
    else:
        raise ValueError(f"unknown layout {layout!r} (use one of {', '.join(LAYOUTS)})")
    if flow is not None:
        members["flow.npy"] = _npy(flow.astype(np.float16))
    if mask is not None:
        members["mask.npy"] = _npy(mask.astype(np.uint8))
    return members
