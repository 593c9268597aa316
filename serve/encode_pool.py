"""A pool of encode processes for one serving worker: x264 runs there without sharing the worker's GIL.

The processes are spawned (the worker holds a CUDA context, which must not be forked) and each watches its parent:
a TorchServe worker can be killed outright (SIGKILL on scale-down or a crash), and the pool's children would then
block forever on a queue whose other ends they themselves hold. A watchdog thread ends each child once its parent is
gone, so no encoder outlives its worker.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from vsyn.video import encode_video, resize_video


def encode_pool(processes: int) -> ProcessPoolExecutor:
    """`processes` spawned encode processes that exit with this process."""
    return ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))  # fmt: skip


def resize_and_encode(frames: np.ndarray, size: tuple[int, int], **options) -> bytes:
    """One served video's CPU work, for a thread or a pool process: resize to the asked size, then encode.

    It lives here, not in the handler module, so a pool process can unpickle it by importing only this module
    (and vsyn.video), not torch.
    """
    return encode_video(resize_video(frames, size), **options)


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """In each child: a daemon thread that ends the process once it has been re-parented (its worker died)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
