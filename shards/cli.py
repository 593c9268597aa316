"""``vsyn shards {pack,verify,upload,ls}`` -- registered through the ``vsyn.commands`` entry point."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import textwrap
import sys
from pathlib import Path

from shards.layout import LAYOUTS
from shards.manifest import verify
from shards.pack import ShardLimits, pack
from shards.preprocess import ClipOptions
from shards.sources import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, Unit, csv_units, procedural_units, sequence_units,
                            sky_units, video_units)
from vsyn.errors import VsynError

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def byte_size(text: str) -> int:
    """'1GB', '500M', '65536' -> bytes (decimal units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GB, 500MB, 65536)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _units(args: argparse.Namespace) -> list[Unit]:
    if args.source == "procedural":
        return procedural_units(args.clips, args.seed, args.val_fraction, args.split)
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            raise VsynError(f"{path}: no such file or folder")
    if args.source == "sky":
        return sky_units(inputs[0])
    if args.source == "videos":
        return video_units(inputs, args.val_fraction)
    if args.source == "csv":
        return csv_units(inputs, args.val_fraction)
    return sequence_units(args.source, inputs, args.val_fraction)


def _check_out(out: Path) -> None:
    """Before any work: OUT must be a folder (or not exist yet) so a failed pack leaves nothing behind."""
    if out.exists() and not out.is_dir():
        raise VsynError(f"OUT '{out}' exists and is not a folder; give a new or existing folder for the shards")


def _pack(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.size < 8 or args.frames < 2:
        raise VsynError(f"--size must be >= 8 and --frames >= 2 (got {args.size}, {args.frames})")
    if not 0 <= args.val_fraction < 1:
        raise VsynError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    _check_out(out)
    fps = getattr(args, "fps", None)
    opts = ClipOptions(
        size=args.size, frames=args.frames, fps=fps, source_fps=getattr(args, "source_fps", 25.0),
        layout=args.layout, min_motion=args.min_motion, motion_gap=args.motion_gap, seed=args.seed,
        license=args.license, attribution=args.attribution,
    )
    units = _units(args)
    inputs = [str(Path(p).resolve()) for p in getattr(args, "inputs", [])]
    config = {"source": args.source, "inputs": inputs, "val_fraction": args.val_fraction}
    if args.source == "procedural":
        config["split"] = args.split
    created = not out.exists()
    try:
        summary = pack(units, out, opts, ShardLimits(args.shard_size, args.shard_samples), config, args.workers)
    except VsynError:
        if created and not any(out.glob("*.tar")):  # refused with nothing packed: leave no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
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


def _common_options(source: str) -> argparse.ArgumentParser:
    """Options every source shares (a parent parser: each source's help lists them with its own)."""
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("--size", type=int, default=128, help="side of the square clips in px: short side resized "
                     "to it (aspect kept), centre crop")
    out.add_argument("--frames", type=int, default=25, help="frames per clip; shorter units are skipped")
    out.add_argument("--layout", choices=LAYOUTS, default="npy",
                     help="sample layout: npy (fastest to read), mp4 (smallest), jpg (see shards/README.md)")
    out.add_argument("--shard-size", type=byte_size, default="1GB", help="max bytes per shard")
    out.add_argument("--shard-samples", type=int, default=10_000, help="max clips per shard")
    out.add_argument("--val-fraction", type=float, default=0.0,
                     help="share of source videos put in the val split" + (
                         "" if source == "procedural" else " where the dataset has no train/test folders"))
    out.add_argument("--min-motion", type=float, default=None,
                     help="drop clips where less than this share of pixels changes between frames --motion-gap "
                     "apart (off unless given)")
    out.add_argument("--motion-gap", type=int, default=5, help="frame distance of the --min-motion probe")
    out.add_argument("--license", default="", help="license of the source material, stored with every clip")
    out.add_argument("--attribution", default="", help="attribution stored with every clip")
    out.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel packing processes")
    return common


# source -> (inputs metavar, inputs nargs, one-line help, description)
_SOURCE_HELP = {
    "sky": ("ROOT", None, "Sky Timelapse: ROOT/{train,test}/<video>/<clip>/*.jpg",
            "Sky Timelapse as distributed: ROOT/train/ and ROOT/test/ hold <video>/<clip>/ folders of JPEG "
            "frames. test/ becomes the val split; every clip folder of a video lands in its video's split."),
    "bair": ("ROOT", "+", "BAIR robot pushing: one folder of PNG frames per sequence",
             "BAIR robot pushing as image sequences: every folder under ROOT that holds images is one sequence "
             "(frames sorted numerically, 9.png before 10.png). train/ and test|val/ top folders give the split."),
    "videos": ("INPUT", "+", "video files, or folders searched recursively for them",
               f"Video files ({', '.join(sorted(VIDEO_SUFFIXES))}), given one by one or as folders searched "
               "recursively. One source video = one unit: its clips never straddle splits. A train/ or "
               "test|val/ top folder gives the split, else a hash of the file's path against --val-fraction. "
               "Cut a long video into scenes with `csv`."),
    "frames": ("FOLDER", "+", "folders of frame images, one video per folder",
               f"Image sequences: every folder that directly holds images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
               "is one video, frames sorted numerically. Split by a train/ or test|val/ top folder, else by hash."),
    "csv": ("CSV", "+", "CSV files listing video_id,file[,start,end] rows",
            "CSV files with a header row and the columns video_id, file (a video path, relative to the CSV) and "
            "optionally start, end (seconds; empty means the whole video). Rows with the same video_id share a "
            "split (a hash of video_id against --val-fraction).\n\nExample clips.csv:\n"
            "  video_id,file,start,end\n  river,river.mp4,0,12.5\n  river,river.mp4,40,55\n  lake,lake/lake.mov,,"),
}


def _add_pack(sub: argparse._SubParsersAction) -> None:
    pack_parser = sub.add_parser(
        "pack", help="pack clips into shards + manifest.json",
        description="vsyn shards pack SOURCE [INPUT...] OUT: one sub-command per source, each with its own help "
        "(vsyn shards pack SOURCE --help). Re-running the same command resumes an interrupted pack.")
    sources = pack_parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    p = sources.add_parser(
        "procedural", parents=[_common_options("procedural")], help="synthetic landscapes with true flow and mask",
        description="Synthetic landscapes (drifting clouds, flowing water, still ground) with their true per-frame "
        "flow and static-region mask: the embedded demo data and the ground truth of the motion metric. "
        "No inputs, only OUT.")
    p.add_argument("out", metavar="OUT", help="output folder (created)")
    p.add_argument("--clips", type=int, default=64, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (clip i of seed s is always the same)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="train scenes (--val-fraction holds some out as val) or held-out test scenes from a "
                        "separate seed range")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate recorded with the clips")
    p.set_defaults(func=_pack)

    for source, (metavar, nargs, help_line, description) in _SOURCE_HELP.items():
        text, _, example = description.partition("\n\n")
        p = sources.add_parser(source, parents=[_common_options(source)], help=help_line,
                               description="\n\n".join(filter(None, [textwrap.fill(text, 78), example])),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("inputs", metavar=metavar, nargs=nargs or 1, help=help_line)
        p.add_argument("out", metavar="OUT", help="output folder (created)")
        p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: keep the "
                       "source's)")
        if source in ("sky", "bair", "frames"):
            p.add_argument("--source-fps", type=float, default=25.0, help="frame rate of the image sequences")
        p.set_defaults(func=_pack, seed=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="pack, verify, upload and list WebDataset shards")
    sub = parser.add_subparsers(dest="shards_command", metavar="ACTION", required=True)
    _add_pack(sub)

    v = sub.add_parser("verify", help="re-check shards against OUT/manifest.json (exit 1 on any mismatch)")
    v.add_argument("out", metavar="OUT", help="a packed folder (holding manifest.json)")
    v.set_defaults(func=_verify)

    u = sub.add_parser("upload", help="upload OUT's shards and manifest to s3://bucket/prefix (AWS env/config)")
    u.add_argument("out", metavar="OUT", help="a packed folder (holding manifest.json)")
    u.add_argument("url", metavar="S3_URL", help="s3://bucket/prefix")
    u.add_argument("--workers", type=int, default=4, help="parallel uploads")
    u.set_defaults(func=_upload)

    ls = sub.add_parser("ls", help="list shards at a folder, s3:// or http(s):// prefix")
    ls.add_argument("url", metavar="URL", help="folder, s3://bucket/prefix or http(s):// prefix")
    ls.set_defaults(func=_ls)
