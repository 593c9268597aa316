"""Turn what a user writes into a shard list: paths, brace patterns, ``http(s)://``, ``s3://``, or a manifest.

``DATA`` may be one string (parts joined with ``::``) or a list. A part that names a ``manifest.json`` -- or a
directory or URL prefix ending in ``/`` that holds one -- expands to the manifest's shards, with their sample
counts; ``manifest.json#val`` keeps only the shards of one split. Anything else is brace-expanded
(``shards/train-{000000..000009}.tar``).

Splits: a reader asks for the splits it wants (training ``TRAIN_SPLITS``, evaluation ``EVAL_SPLITS``); a manifest
part without ``#split`` then reads the first of them that the manifest has, and an explicit ``#split`` always wins
(``#train`` evaluates on training clips on purpose). A part with no split information (a shard pattern, or a
manifest whose shards carry no split) is read whole, and a note says so once per process.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Sequence

from webdataset.shardlists import expand_urls

from vsyn.data.samples import Shard
from vsyn.data.streams import read_bytes
from vsyn.errors import VsynError

MANIFEST = "manifest.json"
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")  # held-out clips: the packer's val split, or a separately packed test set

log = logging.getLogger("vsyn.data")
_NOTED: set[str] = set()  # parts already reported as having no split information


def _manifest_url(part: str) -> str | None:
    base = part.split("#", 1)[0]
    if base.endswith(MANIFEST):
        return part
    if base.endswith("/") or ("://" not in base and os.path.isdir(base)):
        return base.rstrip("/") + "/" + MANIFEST + part[len(base) :]
    return None


def _read_manifest(location: str) -> list[dict]:
    try:
        return json.loads(read_bytes(location))["shards"]
    except Exception as exc:
        raise VsynError(f"cannot read shard manifest {location}: {type(exc).__name__}: {exc}") from None


def _note_once(part: str, why: str) -> None:
    if part not in _NOTED:
        _NOTED.add(part)
        log.warning("%s: %s; reading all of its shards", part, why)


def _pin_part(part: str, splits: Sequence[str]) -> str:
    manifest = _manifest_url(part)
    if manifest is None:
        _note_once(part, "no split information (not a manifest)")
        return part
    if "#" in manifest:
        return manifest
    present = {e.get("split") for e in _read_manifest(manifest)}
    if present == {None}:
        _note_once(part, "its manifest gives no split")
        return manifest
    for split in splits:
        if split in present:
            return f"{manifest}#{split}"
    have = ", ".join(sorted(str(s) for s in present))
    raise VsynError(f"{part} has no {' or '.join(splits)} split (it has: {have}); pack one (e.g. --val-fraction, "
                    f"or procedural --split test) or name a split on purpose: {manifest}#<split>")


def pin_split(data: str | os.PathLike | Sequence[str], splits: Sequence[str]) -> str | list[str]:
    """``data`` with every manifest part naming its split: the first of ``splits`` the manifest has, unless the part
    names one already. Raises VsynError when a manifest has splits but none of these."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if isinstance(data, str):
        return "::".join(_pin_part(p.strip(), splits) for p in data.split("::") if p.strip())
    return [_pin_part(os.fspath(p).strip(), splits) for p in data]


def _from_manifest(url: str) -> list[Shard]:
    location, _, split = url.partition("#")
    entries = _read_manifest(location)
    base = posixpath.dirname(location) if "://" in location else os.path.dirname(location)
    join = posixpath.join if "://" in location else os.path.join
    chosen = [e for e in entries if not split or e.get("split") == split]
    if not chosen:
        raise VsynError(f"manifest {location} lists no shards" + (f" of split {split!r}" if split else ""))
    return [Shard(join(base, e["name"]), int(e["num_samples"])) for e in chosen]


def resolve(data: str | os.PathLike | Sequence[str], splits: Sequence[str] | None = None) -> list[Shard]:
    """The shards behind ``data`` (of the first of ``splits`` a manifest has, see `pin_split`); raises VsynError
    when there are none."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if splits is not None:
        data = pin_split(data, splits)
    parts = data.split("::") if isinstance(data, str) else [os.fspath(p) for p in data]
    shards: list[Shard] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        manifest = _manifest_url(part)
        if manifest is not None:
            shards.extend(_from_manifest(manifest))
        else:
            shards.extend(Shard(url) for url in expand_urls(part))
    if not shards:
        raise VsynError(f"no shards given (data={data!r})")
    return shards


def total_samples(shards: list[Shard]) -> int | None:
    """Samples in all shards, when every count is known (manifests)."""
    counts = [s.num_samples for s in shards]
    return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]
