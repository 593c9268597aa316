"""TorchServe's API keys: read them, renew them, and keep them alive for as long as the server runs.

TorchServe writes `key_file.json` (inference, management and API keys) into its working directory; the inference and
management keys expire after `token_expiration_min` (60 by default), after which every call is refused with the same
400 a wrong key gets. A POST to the management API's `/token?type=...` with the API key (which never expires) issues
a new key with a new lifetime; the old one stops working at once and TorchServe rewrites the file (in place, not
atomically: readers retry a half-written file).

`vsyn serve start` runs `python -m serve.keys --run-dir DIR --leader PID` beside TorchServe: it renews each key once
half its lifetime has passed, so a server keeps answering for as long as it runs, and exits when TorchServe does. Clients follow by
re-reading the file (`VsynClient` does on every call, and retries once when a call raced a renewal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests

from serve.config import ServerSettings

RENEWED = ("inference", "management")


@dataclass(frozen=True)
class Key:
    key: str
    expires: datetime | None  # None: the API key, which does not expire

    def seconds_left(self, now: datetime | None = None) -> float:
        if self.expires is None:
            return float("inf")
        return (self.expires - (now or datetime.now(timezone.utc))).total_seconds()


def read_key_file(path: str | Path, attempts: int = 20) -> dict[str, Key]:
    """{"inference": Key, "management": Key, "API": Key}; retries while TorchServe is rewriting the file."""
    for attempt in range(attempts):
        try:
            data = json.loads(Path(path).read_text())
            return {
                name: Key(entry["key"], instant(entry.get("expiration time")))
                for name, entry in data.items()
                if isinstance(entry, dict) and "key" in entry
            }
        except (json.JSONDecodeError, KeyError, ValueError):  # caught mid-rewrite
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def instant(text: str | None) -> datetime | None:
    """Java's Instant.toString() (e.g. 2026-12-03T16:27:35.123456789Z) as an aware datetime."""
    if not text:
        return None
    text = text.strip()
    if "." in text:  # Python takes at most microseconds
        head, frac = text.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        text = f"{head}.{digits[:6]:0<6}{frac[len(digits):]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def renew(settings: ServerSettings, kind: str, timeout: float = 10.0) -> Key:
    """Have TorchServe issue a new `kind` ("inference" or "management") key; returns it as the file now holds it."""
    if kind not in RENEWED:
        raise ValueError(f"kind must be one of {RENEWED}, not {kind!r}")
    api = read_key_file(settings.key_file)["API"].key
    old = read_key_file(settings.key_file)[kind].key
    r = requests.post(f"{settings.url('management')}/token", params={"type": kind},
                      headers={"Authorization": f"Bearer {api}"}, timeout=timeout)  # fmt: skip
    r.raise_for_status()
    deadline = time.monotonic() + timeout
    while True:  # the file is rewritten before the response is sent; allow for a slow disk anyway
        new = read_key_file(settings.key_file)[kind]
        if new.key != old or time.monotonic() > deadline:
            return new
        time.sleep(0.05)


def due(keys: dict[str, Key], lifetime_s: float, now: datetime | None = None) -> list[str]:
    """The keys with less than half their lifetime left."""
    return [k for k in RENEWED if k in keys and keys[k].seconds_left(now) < lifetime_s / 2]


def keep(settings: ServerSettings, leader: int, log=print) -> None:
    """Renew the keys at half-life until the server's process-group leader `leader` is gone."""
    lifetime = settings.token_expiration_min * 60
    poll = max(0.5, min(lifetime / 8, 60.0))
    next_check = time.monotonic()
    while _alive(leader):
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + poll
            try:
                keys = read_key_file(settings.key_file)
            except (OSError, json.JSONDecodeError, KeyError, ValueError):
                keys = {}  # not written yet (server starting)
                next_check = time.monotonic() + 0.5
            for kind in due(keys, lifetime):
                try:
                    new = renew(settings, kind)
                    log(f"[vsyn keys] renewed the {kind} key; it expires {new.expires:%Y-%m-%dT%H:%M:%SZ}")
                except (requests.RequestException, OSError, KeyError, ValueError) as exc:
                    log(f"[vsyn keys] could not renew the {kind} key ({exc.__class__.__name__}: {exc}); retrying")
        time.sleep(min(1.0, poll))  # notice within a second when the server is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Renew a vsyn TorchServe's keys at half-life while it runs.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--leader", type=int, required=True, help="pid of the server's process-group leader")
    args = p.parse_args(argv)
    keep(ServerSettings.load(args.run_dir), args.leader, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
