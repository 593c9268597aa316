"""x264 preset benchmark: encode time and size of one served clip (128 px x 25 frames mp4) per preset.

Encoding is the serving path's CPU cost per video (`vsyn.video.encode_video`: RGB -> YUV, x264 single-threaded,
mp4 mux), so its time bounds videos/s per core. The clip is a textured landscape panning 1 px a frame with light
per-frame noise: every frame differs, as a generated clip's do. Presets are timed round-robin (each repeat runs every
preset once), so load from other processes spreads over all of them; CPU time is the encoding thread's own.

    python bench/encode.py                       # default presets, 30 repeats, appends to bench/RESULTS.md
    python bench/encode.py --presets ultrafast medium --repeats 100 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from record import RESULTS, append_report, provenance  # bench/record.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESETS = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]


def panning_clip(size: int = 128, frames: int = 25, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    """uint8 (T, size, size, 3): a sky gradient over textured ground, panning 1 px a frame, plus per-frame noise."""
    rng = np.random.default_rng(seed)
    width = size + frames
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([90, 140, 230]) + y * np.array([80, 60, -30]) + np.zeros((1, width, 1))
    ground = np.array([60, 110, 50]) + rng.normal(0, 12, (size, width, 3))
    scene = np.where(y > 0.6, ground, sky)
    clip = np.stack([scene[:, t : t + size] for t in range(frames)]) + rng.normal(0, noise, (frames, size, size, 3))
    return clip.clip(0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def measure(clip: np.ndarray, presets: list[str], repeats: int, warmup: int = 2) -> list[dict]:
    """Per preset: median/min wall ms, median CPU ms, bytes, PSNR; raises if a preset's bytes ever change."""
    from vsyn.video import decode_video, encode_video

    reference = {p: encode_video(clip, preset=p) for p in presets}
    wall: dict[str, list[float]] = {p: [] for p in presets}
    cpu: dict[str, list[float]] = {p: [] for p in presets}
    for r in range(warmup + repeats):
        for p in presets:
            w0, c0 = time.perf_counter(), time.thread_time()
            data = encode_video(clip, preset=p)
            w1, c1 = time.perf_counter(), time.thread_time()
            if data != reference[p]:
                raise RuntimeError(f"preset {p}: bytes changed between repeats")
            if r >= warmup:
                wall[p].append(1e3 * (w1 - w0))
                cpu[p].append(1e3 * (c1 - c0))
    return [{"preset": p, "wall_ms": float(np.median(wall[p])), "min_ms": min(wall[p]),
             "cpu_ms": float(np.median(cpu[p])), "bytes": len(reference[p]),
             "psnr": psnr(decode_video(reference[p]), clip)} for p in presets]  # fmt: skip


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["preset"] == "medium"), rows[-1])
    lines = [f"| x264 preset | wall ms / video (median) | wall ms (min) | CPU ms (median) | videos/s per core | "
             f"time vs {base['preset']} | bytes | size vs {base['preset']} | PSNR (dB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['preset']} | {r['wall_ms']:.1f} | {r['min_ms']:.1f} | {r['cpu_ms']:.1f} | "
                     f"{1e3 / r['wall_ms']:.0f} | {r['wall_ms'] / base['wall_ms']:.2f}x | {r['bytes']} | "
                     f"{r['bytes'] / base['bytes']:.2f}x | {r['psnr']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from vsyn.video import X264_PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS, choices=X264_PRESETS)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--repeats", type=int, default=30, help="timed encodes per preset (after 2 warm-up rounds)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]
    clip = panning_clip(args.size, args.frames)
    rows = measure(clip, args.presets, args.repeats)
    report = "\n".join([
        f"## bench/encode.py: x264 presets, {args.size} px x {args.frames} frames mp4 (CRF 17, 1 thread) — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(load_before),
        f"- clip: textured landscape panning 1 px a frame + Gaussian noise (sigma 3); one `encode_video` call per "
        f"video (RGB -> YUV, x264, mp4 mux), {args.repeats} timed repeats per preset, round-robin; bytes were "
        f"identical across repeats for every preset; PSNR of the decoded video against the input",
        "",
        table(rows),
        "",
    ])  # fmt: skip
    print(report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
