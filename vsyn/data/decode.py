"""Decode one raw sample's members into arrays, reading only the frames asked for.

Three video layouts are understood (``shards/README.md`` says which the packer writes and why): one H.264
``<key>.mp4`` per clip, per-frame images ``<key>.<i>.jpg|png|webp``, or raw ``<key>.frames.npy``. Procedural samples
add ``<key>.flow.npy`` (float16 (T-1,2,H,W)) and ``<key>.mask.npy`` (uint8 (H,W)).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from functools import lru_cache

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

_FRAME_MEMBER = re.compile(r"^(\d+)\.(jpg|jpeg|png|webp)$")


@lru_cache(maxsize=2)
def _reformatter(pid: int) -> VideoReformatter:
    """One colour converter per process: building one per frame doubles decode time, and one inherited through
    fork() deadlocks in the child."""
    return VideoReformatter()


def metadata(sample: dict) -> dict:
    if "json" not in sample:
        raise ValueError("sample has no .json metadata")
    return json.loads(sample["json"])


def num_frames(sample: dict, meta: dict) -> int:
    """Frames stored in the sample (from metadata, or by counting frame members)."""
    if "num_frames" in meta:
        return int(meta["num_frames"])
    members = [k for k in sample if _FRAME_MEMBER.match(k)]
    if members:
        return len(members)
    raise ValueError("metadata lacks num_frames")


def _decode_mp4(data: bytes, indices: Sequence[int]) -> np.ndarray:
    wanted = set(indices)
    last = max(indices)
    frames: dict[int, np.ndarray] = {}
    reformatter = _reformatter(os.getpid())
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one clip per loader worker; threads would only fight each other
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = reformatter.reformat(frame, format="rgb24").to_ndarray()
            if i >= last:
                break
    missing = wanted - frames.keys()
    if missing:
        raise ValueError(f"mp4 has no frame {min(missing)}")
    return np.stack([frames[i] for i in indices])


def _decode_images(sample: dict, indices: Sequence[int]) -> np.ndarray:
    by_index = {int(m.group(1)): k for k in sample if (m := _FRAME_MEMBER.match(k))}
    out = []
    for i in indices:
        with Image.open(io.BytesIO(sample[by_index[i]])) as img:
            out.append(np.asarray(img.convert("RGB")))
    return np.stack(out)


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_video(sample: dict, meta: dict, indices: Sequence[int]) -> np.ndarray:
    """uint8 (len(indices), H, W, 3): the given frames of the clip, cropped to the metadata's size."""
    if "mp4" in sample:
        video = _decode_mp4(sample["mp4"], indices)
    elif "frames.npy" in sample:
        video = _npy(sample["frames.npy"])[list(indices)]
    elif any(_FRAME_MEMBER.match(k) for k in sample):
        video = _decode_images(sample, indices)
    else:
        raise ValueError("sample has no video member (.mp4, .<i>.jpg|png|webp or .frames.npy)")
    if "size" in meta:  # x264 pads odd sides to even ones
        h, w = meta["size"]
        video = video[:, :h, :w]
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"decoded video has shape {video.shape} {video.dtype}, expected uint8 (T,H,W,3)")
    return video


def decode_flow(sample: dict) -> np.ndarray | None:
    return _npy(sample["flow.npy"]) if "flow.npy" in sample else None


def decode_mask(sample: dict) -> np.ndarray | None:
    return _npy(sample["mask.npy"]) if "mask.npy" in sample else None
