"""Start, stop and probe one TorchServe instance whose every file lives in its run dir.

TorchServe's own `--start/--stop` keeps a single pid file in the system temp dir and forgets the Python workers
the JVM spawns. We run `torchserve --foreground` as the leader of a new process group instead, with the run dir as
its working directory (key_file.json lands there) and TEMP/LOG_LOCATION pointing inside it; `stop` signals the
whole group, so the JVM and every worker go together, and escalates to SIGKILL after a grace period.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from serve.client import VsynClient
from serve.config import ServerSettings, write_properties
from vsyn.errors import VsynError


@dataclass
class Health:
    running: bool  # the process group is alive
    healthy: bool  # /ping answered "Healthy" with the inference key
    models: dict[str, list[str]]  # model name -> worker states (READY, ...)
    detail: str = ""

    @property
    def ready(self) -> bool:
        return self.running and self.healthy and bool(self.models) and all(
            states and all(s == "READY" for s in states) for states in self.models.values()
        )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise VsynError("TorchServe needs Java 11+ (java not on PATH and JAVA_HOME unset)")
    return java


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that are free right now (for tests and benchmarks; racy by nature)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _read_pid(settings: ServerSettings) -> int | None:
    try:
        return int(settings.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _environment(settings: ServerSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TS_CONFIG_FILE", None)  # would override --ts-config
    tmp = str(settings.tmp_dir)
    env.update(
        TEMP=tmp,  # JVM tmpdir: model extraction and worker sockets
        TMPDIR=tmp,  # TorchServe's own pid file and the workers' tempfile users
        LOG_LOCATION=str(settings.log_dir),
        METRICS_LOCATION=str(settings.log_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def start(settings: ServerSettings, wait_s: float = 180.0) -> Health:
    """Write config.properties, launch TorchServe and wait until every model has READY workers."""
    _java()
    if not settings.model_store.is_dir():
        raise VsynError(f"model store {settings.model_store} is not a directory")
    for name in settings.models:
        mar = name.split("=", 1)[-1]
        if not (settings.model_store / mar).is_file():
            raise VsynError(f"{mar} not found in {settings.model_store} (build it with `vsyn export`)")
    pid = _read_pid(settings)
    if pid and _group_alive(pid):
        raise VsynError(f"a server already runs from {settings.run_dir} (pid {pid}); `vsyn serve stop` it first")
    busy = [f"{n} {p}" for n, p in settings.ports().items() if not _port_free(settings.host, p)]
    if busy:
        raise VsynError(f"ports in use: {', '.join(busy)} (pick others with --port/--*-port)")

    write_properties(settings)
    settings.key_file.unlink(missing_ok=True)  # a stale key file would look like a started server
    cmd = [
        sys.executable, "-m", "ts.model_server", "--start", "--foreground",
        "--ts-config", str(settings.config_path), "--model-store", str(settings.model_store),
    ]  # fmt: skip
    console = open(settings.log_dir / "console.log", "ab")  # noqa: SIM115 (owned by the child from here on)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=settings.run_dir,
            env=_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() takes the JVM and its workers with it
        )
    finally:
        console.close()
    settings.pid_file.write_text(f"{proc.pid}\n")
    return wait_ready(settings, wait_s, proc=proc)


def wait_ready(settings: ServerSettings, wait_s: float, proc: subprocess.Popen | None = None) -> Health:
    deadline = time.monotonic() + wait_s
    health = status(settings)
    while not health.ready:
        if proc is not None and proc.poll() is not None:
            raise VsynError(f"TorchServe exited with code {proc.returncode}; see {_log_hint(settings)}")
        if time.monotonic() > deadline:
            stop(settings)
            raise VsynError(f"TorchServe not ready after {wait_s:.0f} s ({health.detail}); see {_log_hint(settings)}")
        time.sleep(0.5)
        health = status(settings)
    return health


def _log_hint(settings: ServerSettings) -> str:
    return f"{settings.log_dir}/console.log and {settings.log_dir}/model_log.log"


def status(settings: ServerSettings) -> Health:
    pid = _read_pid(settings)
    if not pid or not _group_alive(pid):
        return Health(False, False, {}, "not running")
    if not settings.key_file.is_file():
        return Health(True, False, {}, "starting (no key file yet)")
    client = VsynClient(settings)
    try:
        healthy = client.ping(timeout=2.0).get("status") == "Healthy"
        models = {}
        for name in settings.models:
            model = name.split("=", 1)[0]
            client.model = model
            desc = client.describe(timeout=2.0)
            models[model] = [w.get("status", "?") for d in desc for w in d.get("workers", [])]
    except (requests.RequestException, ValueError, KeyError) as exc:
        return Health(True, False, {}, f"not answering: {exc.__class__.__name__}")
    return Health(True, healthy, models, "ok" if healthy else "ping not Healthy")


def stop(settings: ServerSettings, grace_s: float = 30.0) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after `grace_s`. False if nothing ran."""
    pid = _read_pid(settings)
    if not pid or not _group_alive(pid):
        settings.pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while _group_alive(pid):
            _reap(pid)
            time.sleep(0.1)
    _reap(pid)
    settings.pid_file.unlink(missing_ok=True)
    settings.key_file.unlink(missing_ok=True)  # keys die with the server
    return True


def _reap(pid: int) -> None:
    """Collect the leader if it is our own child (tests start and stop in one process), so it does not linger."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
