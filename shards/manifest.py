"""``OUT/manifest.json`` -- the index of a packed dataset -- and the checks behind ``vsyn shards verify``.

Format (``docs/contracts.md``): ``{"shards": [{"name", "split", "num_samples", "bytes", "sha256"}],
"num_samples": N, "splits": {split: N}, "config": {...}}``.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from shards.writer import ShardInfo, sha256_file
from vsyn.errors import VsynError

MANIFEST = "manifest.json"


def manifest_dict(infos: list[ShardInfo], config: dict) -> dict:
    splits: dict[str, int] = {}
    for info in infos:
        splits[info.split] = splits.get(info.split, 0) + info.num_samples
    return {"shards": [i.entry() for i in infos], "num_samples": sum(splits.values()), "splits": splits,
            "config": config}


def write_manifest(out: Path, infos: list[ShardInfo], config: dict) -> Path:
    path = out / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest_dict(infos, config), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_manifest(out: Path) -> dict:
    path = out / MANIFEST if out.is_dir() else out
    if not out.exists():
        raise VsynError(f"{out} does not exist")
    if not path.is_file():
        raise VsynError(f"no {MANIFEST} in {out} (pack it first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VsynError(f"{path} is not a shard manifest (not JSON text: {exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise VsynError(f"{path} is not a shard manifest (no 'shards' list)")
    return manifest


def count_samples(path: Path) -> int:
    """Distinct sample keys in a tar (consecutive members sharing a key are one sample)."""
    keys, last = 0, None
    with tarfile.open(path, "r|") as tar:
        for member in tar:
            key = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
            if key != last:
                keys, last = keys + 1, key
    return keys


def check_shard(out: Path, entry: dict, *, deep: bool = True) -> str | None:
    """Why a shard does not match its manifest entry, or None. ``deep`` also recounts its samples."""
    path = out / entry["name"]
    if not path.is_file():
        return f"{entry['name']}: missing"
    if path.stat().st_size != entry["bytes"]:
        return f"{entry['name']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}"
    if sha256_file(path) != entry["sha256"]:
        return f"{entry['name']}: sha256 mismatch"
    if deep:
        try:
            n = count_samples(path)
        except (tarfile.TarError, OSError) as exc:
            return f"{entry['name']}: unreadable tar: {exc}"
        if n != entry["num_samples"]:
            return f"{entry['name']}: {n} samples, manifest says {entry['num_samples']}"
    return None


def verify(out: Path) -> list[str]:
    """Every mismatch between ``out`` and its manifest (empty when all is well)."""
    manifest = load_manifest(out)
    problems = [p for e in manifest["shards"] if (p := check_shard(out, e))]
    total = sum(e["num_samples"] for e in manifest["shards"])
    if total != manifest.get("num_samples"):
        problems.append(f"num_samples is {manifest.get('num_samples')}, shards hold {total}")
    listed = {e["name"] for e in manifest["shards"]}
    problems += [f"{p.name}: shard not in the manifest" for p in sorted(out.glob("*.tar")) if p.name not in listed]
    return problems
