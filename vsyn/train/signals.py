"""Preemption and Ctrl-C: SIGTERM/SIGUSR2/SIGINT only raise a flag; the loop saves at the next agreed step boundary.

Saving inside a signal handler is unsafe (a collective half-done on one rank deadlocks the others), so the
handler does nothing but set a flag. Ctrl-C (SIGINT) is handled alike -- a complete checkpoint, then exit -- and a
second Ctrl-C exits at once without saving (KeyboardInterrupt). DataLoader workers inherit handlers on fork and,
in a terminal, receive Ctrl-C too: they must ignore these signals so the input pipeline lives until the checkpoint
is written (see `ignore_in_worker`).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

REQUEUE_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
STOP_SIGNALS = (*REQUEUE_SIGNALS, signal.SIGINT)


class PreemptionFlag:
    """Installed for the duration of a run; `.requested` turns True once SIGTERM, SIGUSR2 or SIGINT arrives."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None
        self.interrupted = False  # a Ctrl-C (SIGINT) was among the signals
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.interrupted:
                raise KeyboardInterrupt  # the second Ctrl-C: leave now, the newest complete checkpoint stays
            self.interrupted = True
            sys.stderr.write("\nvsyn: Ctrl-C: saving a checkpoint at the next step boundary, then exiting "
                             "(Ctrl-C again exits at once without saving)\n")
            sys.stderr.flush()
        if self.received is None or signum != signal.SIGINT:
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
    """`worker_init_fn` for DataLoader workers: leave preemption signals and Ctrl-C to the main process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
