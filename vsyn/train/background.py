"""One background thread for the trainer's disk writes (checkpoint files), in order.

A thread, not a process: the jobs are file writes and fsyncs that spend their time in I/O and in C code, and the
state they write is already a host copy (a process would need it copied again through shared memory, and forking
a CUDA process is unsafe). Sample sheets are *not* encoded here: reader workers are forked from the main process
while this thread runs, and a fork taken while the thread held one of libav's global locks (codec opening) would
leave a worker that decodes with libav deadlocked; sheets are small and rare (well under 1% of a run). Each job kind has at most one job in flight: submitting a second
one of a kind first waits for the first, so host copies never pile up when the disk is slower than the schedule.
A job's exception is raised in the loop's thread by the next `wait`/`submit` of its kind or by `close`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

log = logging.getLogger("vsyn.train")


class BackgroundWriter:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsyn-writer")
        self._pending: dict[str, Future] = {}

    def submit(self, kind: str, fn: Callable[[], object]) -> None:
        """Run `fn` in the background after the jobs already queued; waits for the previous job of `kind` first."""
        self.wait(kind)
        self._pending[kind] = self._pool.submit(fn)

    def busy(self, kind: str) -> bool:
        future = self._pending.get(kind)
        return future is not None and not future.done()

    def wait(self, kind: str | None = None) -> None:
        """Block until the job of `kind` (None: every job) has finished; re-raise its exception."""
        kinds = list(self._pending) if kind is None else [kind]
        for k in kinds:
            future = self._pending.pop(k, None)
            if future is not None:
                future.result()

    def close(self) -> None:
        """Finish every queued job (a checkpoint in flight is completed, never abandoned), then stop the thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
