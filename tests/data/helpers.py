"""Helpers shared by the data tests: the standard procedural shard set and an in-process ``vsyn shards``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shards.cli import register

CLIPS, SIZE, FRAMES, PER_SHARD = 24, 32, 9, 6


def shards_cli(*argv: object) -> int:
    """Run ``vsyn shards ARGV`` through the shards parser alone (the full CLI also loads every other plugin)."""
    parser = argparse.ArgumentParser(prog="vsyn")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shards", *map(str, argv)])
    return args.func(args)


def pack_procedural(out: Path, *, clips: int = CLIPS, layout: str = "mp4", per_shard: int = PER_SHARD) -> Path:
    assert shards_cli("pack", "procedural", out, "--clips", clips, "--size", SIZE, "--frames", FRAMES,
                      "--shard-samples", per_shard, "--layout", layout, "--workers", 1) == 0
    return out


def warp_back(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``frame`` (H,W,3) bilinearly at ``(x + dx, y + dy)``: frame t+1 seen through frame t's flow."""
    h, w = frame.shape[:2]
    x = np.clip(np.arange(w)[None, :] + flow[0], 0, w - 1.001)
    y = np.clip(np.arange(h)[:, None] + flow[1], 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    f = frame.astype(np.float64)
    top = f[y0, x0] * (1 - wx) + f[y0, x0 + 1] * wx
    bottom = f[y0 + 1, x0] * (1 - wx) + f[y0 + 1, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy
