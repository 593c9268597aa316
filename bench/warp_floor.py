"""What warping frame 0 can reach on procedural scenes, given the true motion: the floor under any motion head.

For held-out procedural scenes (exact flow and still mask), the L1 error on the moving pixels of frame t against the
true frame t, for:
- copy frame 0 (the "still" reference every motion metric compares with);
- frame 0 warped by the exact per-frame flows chained back to frame 0, reading the photo / the moving layer
  (still pixels filled from moving ones, vsyn.nn.motion.moving_layer);
- frame 0 warped by the clip's mean flow as one steady (Eulerian) field, integrated as the motion head does
  (vsyn.nn.warp.integrate), reading the photo / the moving layer.

A warp that reads the photo copies still occluders into the moving region wherever content comes out from behind
them; that is the smearing and dragging seen on photos, and it scores worse than not moving at all.

    python bench/warp_floor.py --n 24 --size 64 --frames 25

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)

COLUMNS = ("copy frame 0", "exact flow, photo", "exact flow, moving layer", "steady field, photo",
           "steady field, moving layer")


def chained_sources(flow: torch.Tensor) -> list[torch.Tensor]:
    """Where each pixel of frames 1..T−1 was in frame 0, by the exact per-frame flows (forward, at frame t's pixel
    positions): one step back is the fixed point r + flow_t(r) = p, three iterations."""
    from vsyn.nn.warp import pixel_grid, sample_at

    h, w = flow.shape[-2:]
    grid = pixel_grid(h, w)
    source, out = grid.clone(), []
    for t in range(flow.shape[0]):
        step = flow[t][None]
        back = grid.clone()
        for _ in range(3):
            back = grid - sample_at(step, back)
        source = sample_at(source, back)
        out.append(source)
    return out


@torch.no_grad()
def measure(n: int, size: int, frames: int, times: list[int], seed: int) -> dict[int, np.ndarray]:
    """{t: mean over scenes of the five columns}."""
    from shards.procedural import generate_clips
    from vsyn.nn.motion import moving_layer
    from vsyn.nn.warp import integrate, pixel_grid, sample_at

    rows: dict[int, list[list[float]]] = {t: [] for t in times}
    grid = pixel_grid(size, size)
    for clip in generate_clips(n, size, frames, seed=seed, split="test"):
        video = torch.from_numpy(clip["video"]).permute(0, 3, 1, 2).float() / 255
        flow = torch.from_numpy(clip["flow"])
        moving = torch.from_numpy(clip["mask"] == 0)
        if moving.sum() < 16:
            continue
        photo = video[:1]
        layer = moving_layer(photo, moving.float()[None, None])
        exact = chained_sources(flow)
        steady = integrate(flow.mean(0)[None], frames - 1)[:, 0]  # (T−1, 2, h, w) offsets

        def err(frame: torch.Tensor, t: int) -> float:
            return (frame[0] - video[t]).abs().mean(0)[moving].mean().item()

        for t in times:
            rows[t].append([err(photo, t), err(sample_at(photo, exact[t - 1]), t),
                            err(sample_at(layer, exact[t - 1]), t), err(sample_at(photo, grid + steady[t - 1][None]), t),
                            err(sample_at(layer, grid + steady[t - 1][None]), t)])
    return {t: np.mean(np.array(v), axis=0) for t, v in rows.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=24, help="held-out procedural scenes")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--seed", type=int, default=0, help="dataset seed (test seed range)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    times = sorted({t for t in (1, 2, 4, 8, 16, 24, args.frames - 1) if t < args.frames})
    table = measure(args.n, args.size, args.frames, times, args.seed)
    lines = ["| frame t | " + " | ".join(COLUMNS) + " |", "|" + "---:|" * (len(COLUMNS) + 1)]
    lines += [f"| {t} | " + " | ".join(f"{v:.4f}" for v in table[t]) + " |" for t in times]
    report = "\n".join([
        f"## bench/warp_floor.py: frame 0 warped by the true motion, {args.n} held-out procedural scenes, "
        f"{args.size} px x {args.frames} frames — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(load_before),
        "- mean L1 (0-1 range) on the truly moving pixels of frame t; lower is better; definitions in the docstring",
        "",
        *lines,
        "",
    ])
    print(report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
