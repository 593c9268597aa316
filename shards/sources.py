"""Where clips come from: each source lists its *units* (one video, one image sequence, one procedural clip) cheaply
and up front, so packing can be planned, split and resumed before anything is decoded.

Splits are decided per source video, never per clip: by the dataset's own train/test folders where it has them
(``test`` becomes ``val``), otherwise by a stable hash of the video id against ``val_fraction``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vsyn.errors import VsynError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".avi", ".mov", ".mkv"}
SOURCES = ("procedural", "sky", "bair", "videos", "frames", "csv")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "val"}


@dataclass(frozen=True)
class Unit:
    """One packing job: everything in it belongs to one source video (and therefore one split)."""

    source: str
    video_id: str
    split: str
    path: str = ""  # a video file or an image folder; empty for procedural clips
    start: float | None = None  # seconds, for CSV rows
    end: float | None = None
    index: int = 0  # procedural clip number


def natural_key(name: str) -> list:
    """'9.png' < '10.png': digit runs compare as numbers (the original's unsorted glob scrambled BAIR frames)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def hash_split(video_id: str, val_fraction: float) -> str:
    """A stable train/val assignment of a whole video."""
    if val_fraction <= 0:
        return "train"
    h = int.from_bytes(hashlib.sha1(video_id.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _image_folders(root: Path) -> Iterable[Path]:
    """Folders that directly hold images, in natural order."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: natural_key(str(p))):
        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir() if f.is_file()):
            yield folder
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in root.iterdir() if f.is_file()):
        yield root


def _require_dir(path: Path, source: str) -> Path:
    if not path.is_dir():
        raise VsynError(f"{source}: {path} is not a folder")
    return path


def _folder_split(relative: Path, val_fraction: float, video_id: str) -> str:
    top = relative.parts[0].lower() if relative.parts else ""
    return SPLIT_FOLDERS.get(top) or hash_split(video_id, val_fraction)


def procedural_units(clips: int, seed: int, val_fraction: float, split: str = "train") -> list[Unit]:
    """``split="train"``: scenes from the training seed range, ``val_fraction`` of them held out as val;
    ``split="test"``: held-out test scenes from their own seed range (shards.procedural.clip_seed)."""
    if split == "test":
        if val_fraction > 0:
            raise VsynError("procedural --split test packs held-out scenes only; drop --val-fraction")
        return [Unit("procedural", f"procedural-test-{seed}-{i}", "test", index=i) for i in range(clips)]
    if split != "train":
        raise VsynError(f"procedural --split must be train or test, not {split!r}")
    return [Unit("procedural", f"procedural-{seed}-{i}", hash_split(f"procedural-{seed}-{i}", val_fraction), index=i)
            for i in range(clips)]


def sky_units(root: Path) -> list[Unit]:
    """Sky Timelapse: ``root/{train,test}/<video>/<clip>/*.jpg``; every clip folder of a video shares its split."""
    _require_dir(root, "sky")
    units = []
    for split_dir in ("train", "test"):
        base = root / split_dir
        if not base.is_dir():
            continue
        for folder in _image_folders(base):
            rel = folder.relative_to(base)
            video = rel.parts[0] if rel.parts else folder.name
            units.append(Unit("sky", f"{split_dir}/{video}", SPLIT_FOLDERS[split_dir], str(folder)))
    if not units:
        raise VsynError(f"sky: no {root}/{{train,test}}/<video>/<clip>/ image folders found")
    return units


def sequence_units(source: str, roots: list[Path], val_fraction: float) -> list[Unit]:
    """One unit per image folder (BAIR sequences, generic frame folders); split by top folder or by hash."""
    units = []
    for root in roots:
        _require_dir(root, source)
        for folder in _image_folders(root):
            rel = folder.relative_to(root)
            video_id = f"{root.name}/{rel.as_posix()}" if len(roots) > 1 else rel.as_posix()
            units.append(Unit(source, video_id, _folder_split(rel, val_fraction, video_id), str(folder)))
    if not units:
        raise VsynError(f"{source}: no image folders under {', '.join(map(str, roots))}")
    return units


def _csv_file_units(path: Path, val_fraction: float) -> list[Unit]:
    if not path.is_file():
        raise VsynError(f"csv: {path} is not a file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"video_id", "file"} - set(reader.fieldnames or [])
            if missing:
                raise VsynError(f"csv: {path} lacks column(s) {', '.join(sorted(missing))} "
                                "(need a header row video_id,file[,start,end])")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise VsynError(f"csv: {path} is not a CSV text file ({exc})") from None
    units = []
    for n, row in enumerate(rows, start=2):
        file = (path.parent / row["file"]).resolve()
        try:
            start = float(row["start"]) if row.get("start") else None
            end = float(row["end"]) if row.get("end") else None
        except ValueError:
            raise VsynError(f"csv: {path}:{n}: start/end must be seconds, got {row.get('start')!r}, {row.get('end')!r}") from None
        units.append(Unit("videos", row["video_id"], hash_split(row["video_id"], val_fraction), str(file), start, end))
    return units


def csv_units(inputs: list[Path], val_fraction: float) -> list[Unit]:
    """Rows of ``video_id,file[,start,end]`` CSVs (seconds; file relative to the CSV)."""
    units = [unit for path in inputs for unit in _csv_file_units(path, val_fraction)]
    if not units:
        raise VsynError(f"csv: no rows in {', '.join(map(str, inputs))}")
    return units


def video_units(inputs: list[Path], val_fraction: float) -> list[Unit]:
    """Video files, given one by one or as folders searched recursively."""
    units = []
    for path in inputs:
        if path.is_file() and path.suffix.lower() == ".csv":
            raise VsynError(f"videos: {path} is a CSV; pack its rows with `vsyn shards pack csv {path} OUT`")
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES),
                           key=lambda p: natural_key(str(p)))
            for file in files:
                video_id = file.relative_to(path).with_suffix("").as_posix()
                units.append(Unit("videos", video_id, _folder_split(file.relative_to(path), val_fraction, video_id),
                                  str(file)))
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            units.append(Unit("videos", path.stem, hash_split(path.stem, val_fraction), str(path)))
        else:
            raise VsynError(f"videos: {path} is neither a folder nor a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    if not units:
        raise VsynError(f"videos: no {'/'.join(sorted(VIDEO_SUFFIXES))} files in {', '.join(map(str, inputs))}")
    return units
