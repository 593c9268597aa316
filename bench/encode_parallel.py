"""Encoding a served batch in parallel: one thread, N threads, or N processes (the serving handler's options).

A serving worker encodes each batch's videos with `vsyn.video.encode_video`, on `encode_threads` threads or
`encode_processes` spawned processes (serve.encode_pool). Threads share one GIL, which PyAV holds for part of each
frame, so their speed-up over one thread falls short of the core count; processes pay for pickling ~1 MB of frames
per video instead. This measures both against one thread on the same clips, round-robin, in one run.

    python bench/encode_parallel.py                        # N = CPU count, veryfast and ultrafast
    python bench/encode_parallel.py --workers 8 --presets veryfast --no-record
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from encode import panning_clip  # bench/encode.py
from record import RESULTS, append_report, provenance  # bench/record.py

ROOT = Path(__file__).resolve().parents[1]


def batch_seconds(executor: Executor | None, clips: list, preset: str) -> float:
    """Wall time to encode every clip once (in order on this thread when `executor` is None)."""
    from vsyn.video import encode_video

    start = time.perf_counter()
    if executor is None:
        for clip in clips:
            encode_video(clip, fmt="mp4", preset=preset)
    else:
        for job in [executor.submit(encode_video, clip, fmt="mp4", preset=preset) for clip in clips]:
            job.result()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from serve.encode_pool import encode_pool

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads / processes (default: CPUs)")
    p.add_argument("--videos", type=int, default=0, help="videos per batch (default 4 x workers)")
    p.add_argument("--presets", nargs="+", default=["veryfast", "ultrafast"])
    p.add_argument("--repeats", type=int, default=5, help="timed batches per way (after one warm-up round)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    videos = args.videos or 4 * args.workers
    load_before = os.getloadavg()[0]
    clips = [panning_clip(seed=i) for i in range(videos)]
    ways: dict[str, Executor | None] = {
        "1 thread": None,
        f"{args.workers} threads": ThreadPoolExecutor(args.workers),
        f"{args.workers} processes": encode_pool(args.workers),
    }
    rows = []
    try:
        for preset in args.presets:
            times: dict[str, list[float]] = {name: [] for name in ways}
            for round_ in range(args.repeats + 1):  # round-robin: load from elsewhere spreads over every way
                for name, executor in ways.items():
                    seconds = batch_seconds(executor, clips, preset)
                    if round_:  # round 0 warms up (spawned processes import the codec libraries)
                        times[name].append(seconds)
            base = statistics.median(times["1 thread"])
            for name, ts in times.items():
                t = statistics.median(ts)
                rows.append(f"| {preset} | {name} | {1e3 * t:.1f} | {videos / t:.1f} | {base / t:.2f}x |")
                print(rows[-1], flush=True)
    finally:
        for executor in ways.values():
            if executor is not None:
                executor.shutdown()
    report = "\n".join([
        f"\n## bench/encode_parallel.py: {videos} videos of 128 px x 25 frames, mp4 — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", *provenance(load_before),
        f"- the clip of bench/encode.py (a different noise seed per video); median of {args.repeats} batches per way,"
        " round-robin; speed-up against one thread", "",
        "| x264 preset | encoded on | ms per batch | videos/s | speed-up |", "|---|---|---:|---:|---:|", *rows, ""])
    print(report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
