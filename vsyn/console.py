"""What a user sees on the console: vsyn's own INFO lines, third-party noise filtered unless `-v`.

The filtered messages are each known, harmless and repeated on every start; anything else from a library still
shows. `vsyn -v` (or VSYN_VERBOSE=1, which `-v` exports so that launched jobs inherit it) shows everything, with
DEBUG logging. `vsyn.train.run` calls `quiet_known_noise` too, so jobs started by a launcher are as quiet.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

VERBOSE_ENV = "VSYN_VERBOSE"
FORMAT = "%(asctime)s %(name)s: %(message)s"

# (logger name, message pattern, why it is noise)
NOISY_LOG_RECORDS = (
    ("DeepSpeed", r"Setting accelerator to CPU",
     "printed at import on every machine without a GPU, also when DeepSpeed is not used"),
)
# (message pattern, why it is noise): Python warnings, including torch's C++ TORCH_WARN
NOISY_WARNINGS = (
    (r"Grad strides do not match bucket view strides",
     "DDP on CPU: a gradient's layout differs from its bucket's; costs one copy, results are unchanged"),
)


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_known_noise() -> None:
    """Filter the known noise (idempotent; a no-op under VSYN_VERBOSE=1). A logger filter attaches to the logger by
    name, so it holds even when the library creates the logger later."""
    if verbose_from_env():
        return
    for name, pattern, _ in NOISY_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
    for pattern, _ in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)  # an identical filter is replaced, not repeated


def configure(verbose: bool) -> None:
    """Console logging for the `vsyn` command."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    if not verbose:
        # Libraries' INFO chatter (one line per saved file, per HTTP connection, ...) stays out; their warnings show.
        for name in ("accelerate", "urllib3", "botocore", "boto3", "s3transfer", "PIL", "matplotlib", "filelock"):
            logging.getLogger(name).setLevel(logging.WARNING)
    quiet_known_noise()
