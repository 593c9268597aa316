"""Write samples into tar shards that appear under their final name only when complete.

A shard is written to ``<name>.tmp``, flushed to disk, and renamed; an interrupted pack leaves at most a ``.tmp``
file, which the next run deletes. Tar headers carry fixed mtime/owner, so the same samples give the same bytes
(and the same sha256), which is what lets a re-run recognise shards it already wrote.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ShardInfo:
    name: str
    split: str
    num_samples: int
    bytes: int
    sha256: str

    def entry(self) -> dict:
        return {"name": self.name, "split": self.split, "num_samples": self.num_samples, "bytes": self.bytes,
                "sha256": self.sha256}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """One shard at a time: ``add`` samples, then ``close`` to publish it and get its manifest entry."""

    def __init__(self, path: Path, split: str) -> None:
        self.path, self.split = path, split
        self.tmp = path.with_name(path.name + ".tmp")
        self._file = open(self.tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.num_samples = 0

    @property
    def bytes(self) -> int:
        return self._file.tell()

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = "vsyn"
            self._tar.addfile(info, io.BytesIO(data))
        self.num_samples += 1

    def close(self) -> ShardInfo:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return ShardInfo(self.path.name, self.split, self.num_samples, self.path.stat().st_size,
                         sha256_file(self.path))

    def abort(self) -> None:
        self._tar.close()
        self._file.close()
        self.tmp.unlink(missing_ok=True)
