"""Decoded clips per second per CPU core: each shard sample layout, from local disk and from a local S3 server,
against the original's approach (open a whole source mp4 per sample, decode a random 1-second window, resize).

One reader process with no DataLoader workers is one core, so its rate is the per-core rate. The table goes to
stdout and is appended (never overwritten) to bench/RESULTS.md with the machine, git commit and command.

    .venv/bin/python bench/data.py [--clips 96] [--no-s3] [--labels]

--labels adds, per size, procedural samples as `vsyn shards pack procedural` writes them (npy frames plus the flow
and mask labels) read with the labels and without them (make_loader(labels=False), as the trainer reads).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shlex
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.conftest holds the SeaweedFS launcher the tests use

from record import append_report, commit, machine  # noqa: E402  (bench/record.py)
from shards.layout import LAYOUTS, encode_sample  # noqa: E402
from shards.manifest import write_manifest  # noqa: E402
from shards.procedural import make_clip  # noqa: E402
from shards.remote import upload  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402
from vsyn.data import make_loader  # noqa: E402

FRAMES, FPS = 25, 25


def _rate(read_clips, clips: int) -> tuple[float, float]:
    """(clips per CPU-second of this process, clips per wall-second). CPU time is the per-core figure even on a
    shared machine; wall time also includes waiting for the disk, the network and other jobs."""
    read_clips(min(clips, 8))  # warm-up: imports, first connections, page cache
    cpu, wall = time.process_time(), time.perf_counter()
    read_clips(clips)
    return clips / (time.process_time() - cpu), clips / (time.perf_counter() - wall)


def reader_rate(url: str, clips: int, labels: bool = True) -> tuple[float, float]:
    def read(n: int) -> None:
        loader = make_loader(url, frames=FRAMES, batch_size=8, mode="eval", workers=0, labels=labels)
        seen = 0
        for batch in loader:
            seen += len(batch["__key__"])
            if seen >= n:
                break

    return _rate(read, clips)


def pack_plain(out: Path, videos: list[np.ndarray], layout: str, per_shard: int = 32,
               labels: list[dict] | None = None) -> float:
    """Shards of video-only samples (no procedural flow/mask: real footage has none), or with `labels` (each clip's
    flow and mask) the samples procedural packing writes; returns kB per sample."""
    out.mkdir(parents=True)
    infos, writer = [], None
    for i, video in enumerate(videos):
        if writer is None:
            writer = ShardWriter(out / f"train-{len(infos):06d}.tar", "train")
        extra = {"flow": labels[i]["flow"], "mask": labels[i]["mask"]} if labels else {}
        writer.add(f"clip{i:06d}", encode_sample(video, {"source": "bench", "fps": FPS}, layout, **extra))
        if writer.num_samples == per_shard:
            infos.append(writer.close())
            writer = None
    if writer is not None:
        infos.append(writer.close())
    write_manifest(out, infos, {"layout": layout})
    return sum(i.bytes for i in infos) / len(videos) / 1e3


def _source_videos(folder: Path, n: int, side: int = 256, seconds: int = 10) -> list[Path]:
    """Long 'YouTube-like' sources: 10 s at 25 fps, ~240p pixel count, a keyframe every 2 s."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"source{i}.mp4"
        video = make_clip(1000 + i, side, seconds * FPS)["video"]
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(FPS))
            stream.width = stream.height = side
            stream.pix_fmt, stream.gop_size = "yuv420p", 2 * FPS
            for frame in video:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def original_rate(sources: list[Path], size: int, clips: int) -> tuple[float, float]:
    """The original loader: seek to a random start in the whole video, decode 1 s, keep 25 frames, resize each."""
    rng = random.Random(0)

    def read(n: int) -> None:
        for _ in range(n):
            with av.open(str(rng.choice(sources))) as container:
                stream = container.streams.video[0]
                duration = float(stream.duration * stream.time_base)
                start = rng.uniform(0, duration - 1.0)
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
                frames = []
                for frame in container.decode(stream):
                    if frame.time < start:
                        continue
                    if frame.time >= start + 1.0 or len(frames) == FRAMES:
                        break
                    frames.append(np.asarray(frame.to_image().resize((size, size), Image.Resampling.BILINEAR)))
                np.stack(frames)

    return _rate(read, clips)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96, help="clips timed per cell")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--no-s3", action="store_true", help="skip the local S3 server rows")
    parser.add_argument("--labels", action="store_true", help="add procedural samples with flow/mask, read with "
                        "and without the labels")
    args = parser.parse_args()

    rows: list[tuple] = []  # layout, where, size, (clips per CPU-s, clips per wall-s), kB per clip
    with tempfile.TemporaryDirectory(prefix="vsyn-bench-") as tmp:
        work = Path(tmp)
        sources = _source_videos(work / "sources", 4)
        packs = {}
        for size in args.sizes:
            made = [make_clip(i, size, FRAMES) for i in range(args.clips)]
            videos = [m["video"] for m in made]
            if args.labels:
                kb = pack_plain(work / f"labelled{size}", videos, "npy", labels=made)
                for read in (True, False):
                    rows.append((f"npy + flow/mask, labels {'read' if read else 'skipped'}", "local disk", size,
                                 reader_rate(str(work / f"labelled{size}"), args.clips, labels=read), kb))
            for layout in LAYOUTS:
                out = work / f"{layout}{size}"
                kb = pack_plain(out, videos, layout)
                packs[layout, size] = (out, kb)
                rows.append((layout, "local disk", size, reader_rate(str(out), args.clips), kb))
            rows.append(("original: whole mp4, random 1 s", "local disk", size,
                         original_rate(sources, size, max(16, args.clips // 4)),
                         sum(p.stat().st_size for p in sources) / len(sources) / 1e3))
        if not args.no_s3:
            from tests.conftest import seaweedfs

            with seaweedfs(work / "s3") as server:
                for (layout, size), (out, kb) in packs.items():
                    url = f"s3://{server.bucket}/{layout}{size}"
                    upload(out, url)
                    rows.append((layout, "local S3", size, reader_rate(f"{url}/manifest.json", args.clips), kb))

    anchor = {r[2]: r[3][0] for r in rows if r[0].startswith("original")}
    lines = [
        "| layout | from | size | frames | clips/s per core (CPU time) | × original | clips/s wall | kB per sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layout, where, size, (cpu_rate, wall_rate), kb in sorted(rows, key=lambda r: (-r[2], r[1], r[0])):
        lines.append(f"| {layout} | {where} | {size} px | {FRAMES} | {cpu_rate:.0f} | {cpu_rate / anchor[size]:.1f} | "
                     f"{wall_rate:.0f} | {kb:.0f} |")
    table = "\n".join(lines)
    print(table)
    header = (f"\n## bench/data.py — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
              f"- machine: {machine()}, PyAV {av.__version__}\n- commit: {commit()}\n"
              f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`\n"
              "- one process, no loader workers = one core; procedural clips, video members + JSON only (the "
              "'npy + flow/mask' rows also hold the procedural labels); the "
              "original's row reads 10 s, 256x256, 25 fps sources with a keyframe every 2 s (kB = one source "
              f"file); load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: "
              "wall rates are lower bounds, CPU-time rates are the per-core figures)\n\n")
    append_report(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
