"""``vsyn shards {pack,verify,upload,ls}`` -- registered through the ``vsyn.commands`` entry point."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from shards.layout import LAYOUTS
from shards.manifest import verify
from shards.pack import ShardLimits, pack
from shards.preprocess import ClipOptions
from shards.sources import SOURCES, Unit, procedural_units, sequence_units, sky_units, video_units
from vsyn.errors import VsynError

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def byte_size(text: str) -> int:
    """'1GB', '500M', '65536' -> bytes (decimal units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GB, 500MB, 65536)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _units(args: argparse.Namespace, inputs: list[Path]) -> list[Unit]:
    if args.source == "procedural":
        if inputs:
            raise VsynError("procedural takes no inputs: vsyn shards pack procedural OUT --clips N")
        return procedural_units(args.clips, args.seed, args.val_fraction, args.split)
    if not inputs:
        raise VsynError(f"{args.source} needs at least one input: vsyn shards pack {args.source} INPUT... OUT")
    for path in inputs:
        if not path.exists():
            raise VsynError(f"{path}: no such file or folder")
    if args.source == "sky":
        if len(inputs) != 1:
            raise VsynError("sky takes one root folder")
        return sky_units(inputs[0])
    if args.source == "videos":
        return video_units(inputs, args.val_fraction)
    return sequence_units(args.source, inputs, args.val_fraction)


def _pack(args: argparse.Namespace) -> int:
    *inputs, out = [Path(p) for p in args.paths]
    if args.size < 8 or args.frames < 2:
        raise VsynError(f"--size must be >= 8 and --frames >= 2 (got {args.size}, {args.frames})")
    opts = ClipOptions(
        size=args.size, frames=args.frames, fps=args.fps if args.source != "procedural" else (args.fps or 25.0),
        source_fps=args.source_fps, layout=args.layout, min_motion=args.min_motion, motion_gap=args.motion_gap,
        seed=args.seed, license=args.license, attribution=args.attribution,
    )
    units = _units(args, inputs)
    config = {"source": args.source, "inputs": [str(p.resolve()) for p in inputs], "val_fraction": args.val_fraction}
    if args.source == "procedural":
        config["split"] = args.split
    summary = pack(units, out, opts, ShardLimits(args.shard_size, args.shard_samples), config, args.workers)
    for error in summary.errors[:20]:
        print(f"skipped unreadable input {error}", file=sys.stderr)
    print(summary.line(out))
    return 0


def _verify(args: argparse.Namespace) -> int:
    problems = verify(Path(args.out))
    for problem in problems:
        print(problem)
    print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _upload(args: argparse.Namespace) -> int:
    from shards.remote import upload  # boto3 only when talking to S3

    uploaded, skipped = upload(Path(args.out), args.url, workers=args.workers)
    print(f"uploaded {uploaded} shard(s) and the manifest to {args.url} ({skipped} already there)")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from shards.remote import listing

    print("\n".join(listing(args.url)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="pack, verify, upload and list WebDataset shards")
    sub = parser.add_subparsers(dest="shards_command", metavar="ACTION", required=True)

    p = sub.add_parser("pack", help="pack clips into shards + manifest.json",
                       description="vsyn shards pack SOURCE [INPUT...] OUT, e.g. `pack procedural OUT --clips 64` "
                                   "or `pack sky ROOT OUT --size 128 --frames 25`.")
    p.add_argument("source", choices=SOURCES)
    p.add_argument("paths", nargs="+", metavar="INPUT... OUT", help="inputs (none for procedural), then OUT")
    p.add_argument("--size", type=int, default=128, help="output side in px (aspect-preserving resize + centre crop)")
    p.add_argument("--frames", type=int, default=25, help="frames per clip; shorter clips are skipped")
    p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: keep the source's)")
    p.add_argument("--source-fps", type=float, default=25.0, help="frame rate of image sequences")
    p.add_argument("--layout", choices=LAYOUTS, default="npy",
                   help="sample layout: npy (fastest, default), mp4 (smallest), jpg (see shards/README.md)")
    p.add_argument("--shard-size", type=byte_size, default=byte_size("1GB"), help="max bytes per shard (1GB)")
    p.add_argument("--shard-samples", type=int, default=10_000, help="max clips per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel packing processes")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of source videos for val where the dataset has no split folders")
    p.add_argument("--min-motion", type=float, default=None,
                   help="drop clips where less than this share of pixels changes between frames --motion-gap apart")
    p.add_argument("--motion-gap", type=int, default=5)
    p.add_argument("--clips", type=int, default=64, help="procedural: number of clips")
    p.add_argument("--seed", type=int, default=0, help="procedural: dataset seed")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="procedural: train scenes (default; --val-fraction holds some out as val) or held-out test "
                        "scenes from a separate seed range")
    p.add_argument("--license", default="", help="license of the source material, stored with every clip")
    p.add_argument("--attribution", default="", help="attribution stored with every clip")
    p.set_defaults(func=_pack)

    v = sub.add_parser("verify", help="re-check shards against OUT/manifest.json (exit 1 on any mismatch)")
    v.add_argument("out")
    v.set_defaults(func=_verify)

    u = sub.add_parser("upload", help="upload OUT's shards and manifest to s3://bucket/prefix (AWS env/config)")
    u.add_argument("out")
    u.add_argument("url")
    u.add_argument("--workers", type=int, default=4)
    u.set_defaults(func=_upload)

    ls = sub.add_parser("ls", help="list shards at a folder, s3:// or http(s):// prefix")
    ls.add_argument("url")
    ls.set_defaults(func=_ls)
