"""Picklable work for the cluster tests: a procedural packing task (one shard per array element)."""

from __future__ import annotations

from pathlib import Path

from shards.layout import encode_sample
from shards.procedural import clip_seed, make_clip
from shards.writer import ShardWriter


def pack_procedural_shard(out_dir: str, index: int, clips: int = 8, size: int = 32, frames: int = 9) -> dict:
    """Write `train-<index>.tar` with `clips` procedural clips; returns its manifest entry."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out / f"train-{index:06d}.tar", "train")
    for i in range(clips):
        n = index * clips + i
        clip = make_clip(clip_seed(0, n), size, frames)
        meta = {"source": "procedural", "fps": 25.0, "seed": clip_seed(0, n), "license": "CC0"}
        writer.add(f"proc{n:08d}", encode_sample(clip["video"], meta, "npy", flow=clip["flow"], mask=clip["mask"]))
    return writer.close().entry()
