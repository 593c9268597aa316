"""Copy a process's console output into a size-rotated file: `python -m serve.logpump FILE --max-bytes N --backups K`.

TorchServe and nginx write to stdout/stderr; a plain redirect grows one file for as long as the server runs. The
server's processes write into a pipe instead, and this reads it: FILE is renamed to FILE.1 (FILE.1 to FILE.2, ...,
FILE.K dropped) whenever the next line would take it past N bytes, so the output never takes more than (K + 1) x N
bytes. It ignores the signals that stop a server and exits when the last writer has closed the pipe, so
the server's last words (a shutdown trace) are kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

CHUNK = 64 * 1024


class RotatingFile:
    """An append-only file that rotates itself at a size limit, keeping `backups` old copies."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path, self.max_bytes, self.backups = Path(path), max(1, max_bytes), max(0, backups)
        self.file = self.path.open("ab")
        self.size = self.file.tell()

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first whenever it would take the file past the limit; a chunk is split at the
        last line break that fits (or at the limit, for a line longer than a whole file)."""
        while data:
            room = self.max_bytes - self.size
            if len(data) <= room:
                part, data = data, b""
            else:
                cut = data.rfind(b"\n", 0, max(room, 0)) + 1
                if cut == 0 and self.size:
                    self.rotate()  # no whole line fits: start the next file with it
                    continue
                cut = cut or self.max_bytes
                part, data = data[:cut], data[cut:]
            self.file.write(part)
            self.size += len(part)
            if data:
                self.rotate()
        self.file.flush()

    def rotate(self) -> None:
        self.file.close()
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = self.path.open("wb")  # no backups: start the one file over
        self.size = 0

    def close(self) -> None:
        self.file.close()


def pump(source: int, target: RotatingFile) -> None:
    """Copy `source` (a file descriptor) into `target` until end of file."""
    while chunk := os.read(source, CHUNK):
        target.write(chunk)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--max-bytes", type=int, required=True)
    p.add_argument("--backups", type=int, default=5)
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # outlive the server's stop signal: its final output is still coming
    target = RotatingFile(args.file, args.max_bytes, args.backups)
    try:
        pump(sys.stdin.fileno(), target)
    finally:
        target.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
