"""Bookkeeping for data faults: what was skipped, where, and when to give up.

Faults happen in DataLoader worker processes; they travel to the main process inside the batches (``FAULTS_KEY``),
where :class:`FaultReport` counts them and logs each URL once. A worker that keeps failing without producing a
single clip stops with ``FATAL_KEY`` instead of spinning forever.
"""

from __future__ import annotations

import logging

log = logging.getLogger("vsyn.data")

FAULTS_KEY = "__faults__"  # list of (url, reason) recorded since the previous batch of this worker
FATAL_KEY = "__fatal__"  # one clear message; the main process raises it as VsynError


class NothingReadable(Exception):
    """Raised inside a worker when too many faults in a row produced no clip at all."""


class FaultLog:
    """Per-worker record of skipped shards and samples, handed to the main process with the next batch."""

    def __init__(self, urls: list[str], limit: int) -> None:
        self.urls, self.limit = urls, limit
        self.pending: list[tuple[str, str]] = []
        self.in_a_row = 0

    def add(self, url: str, reason: str) -> None:
        self.pending.append((url, reason))
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            shown = ", ".join(self.urls[:5]) + (f" and {len(self.urls) - 5} more" if len(self.urls) > 5 else "")
            raise NothingReadable(f"no readable clips after {self.in_a_row} faults in a row from {shown}; last: {reason}")

    def ok(self) -> None:
        self.in_a_row = 0

    def drain(self) -> list[tuple[str, str]]:
        pending, self.pending = self.pending, []
        return pending


class NullFaultLog(FaultLog):
    """Swallows faults that another reader of the same shard reports (sample-split evaluation)."""

    def __init__(self) -> None:
        super().__init__([], limit=1 << 62)

    def add(self, url: str, reason: str) -> None:
        pass


class FaultReport:
    """Main-process view: the total the trainer logs, plus one warning per faulty URL."""

    def __init__(self) -> None:
        self.skipped = 0
        self.first_reason: dict[str, str] = {}

    def record(self, faults: list[tuple[str, str]]) -> None:
        for url, reason in faults:
            self.skipped += 1
            if url not in self.first_reason:
                self.first_reason[url] = reason
                log.warning("vsyn.data: skipped %s: %s", url, reason)
