"""Preemption signals: SIGTERM/SIGUSR2 only raise a flag; the loop saves at the next agreed step boundary.

Saving inside a signal handler is unsafe (a collective half-done on one rank deadlocks the others), so the
handler does nothing but set a flag. DataLoader workers inherit handlers on fork; they must ignore these signals
so a preemption does not kill the input pipeline before the checkpoint is written (see `ignore_in_worker`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

REQUEUE_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class PreemptionFlag:
    """Installed for the duration of a run; `.requested` turns True once SIGTERM or SIGUSR2 arrives."""

    def __init__(self, signals: tuple[signal.Signals, ...] = REQUEUE_SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():  # signal.signal only works there
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


def ignore_in_worker(worker_id: int | None = None) -> None:
    """`worker_init_fn` for DataLoader workers: leave preemption signals to the main process."""
    for sig in REQUEUE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
