"""Start, stop and probe one vsyn server (TorchServe, its key keeper, its nginx front) whose every file lives in its
run dir.

TorchServe's own `--start/--stop` keeps a single pid file in the system temp dir and forgets the Python workers
the JVM spawns. We run `torchserve --foreground` as the leader of a new process group instead, with the run dir as
its working directory (key_file.json lands there) and TEMP/LOG_LOCATION pointing inside it. Beside it run the key
keeper (`serve.keys`, ended by its pid file, and by itself when TorchServe is gone) and the log pump that rotates
the console output (`serve.logpump`, which exits when the last writer is gone). With the front, TorchServe listens
on 127.0.0.1 only and nginx (`serve.front`, its own process group) faces the clients.

`stop` drains first: nginx stops accepting and lets in-flight requests finish (up to `drain_s`); then the
TorchServe group gets SIGTERM, and SIGKILL after a grace period. Without a front there is nothing to drain with:
TorchServe resets what it is working on.
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from serve import front
from serve.client import VsynClient, key_refused
from serve.config import GRPC_ENV, ServerSettings, write_properties
from serve.keys import read_key_file
from vsyn.errors import VsynError

# `vsyn serve status` states; "key expired" is told apart from "down": the server runs but refuses every call.
DOWN, STARTING, KEY_EXPIRED, KEY_REFUSED, FRONT_DOWN, UNHEALTHY, READY = (
    "down", "starting", "key expired", "key refused", "front down", "unhealthy", "ready")  # fmt: skip


@dataclass
class Health:
    running: bool  # the process group is alive
    healthy: bool  # /ping answered "Healthy" with the inference key
    models: dict[str, list[str]]  # model name -> worker states (READY, ...)
    detail: str = ""
    state: str = ""  # one of the states above

    @property
    def ready(self) -> bool:
        return self.running and self.healthy and bool(self.models) and all(
            states and all(s == "READY" for s in states) for states in self.models.values()
        ) and self.state in ("", READY)


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
    env[GRPC_ENV] = "1" if settings.grpc else "0"  # the workers inherit it: the handler refuses gRPC unless "1"
    return env


def start(settings: ServerSettings, wait_s: float = 180.0) -> Health:
    """Write the configs, launch TorchServe (+ key keeper, log pump), wait for READY workers, then open the front."""
    _java()
    if not settings.model_store.is_dir():
        raise VsynError(f"model store {settings.model_store} is not a directory")
    for name in settings.models:
        mar = name.split("=", 1)[-1]
        if not (settings.model_store / mar).is_file():
            raise VsynError(f"{mar} not found in {settings.model_store} (build it with `vsyn export`)")
    if settings.grpc:
        _check_grpc_batches(settings)
    pid = _read_pid(settings)
    if pid and _group_alive(pid):
        raise VsynError(f"a server already runs from {settings.run_dir} (pid {pid}); `vsyn serve stop` it first")
    if settings.fronted and front.alive(settings):
        raise VsynError(f"a front already runs from {settings.run_dir} (pid {front.pid(settings)}); "
                        "`vsyn serve stop` it first")  # fmt: skip
    busy = [f"{n} {p}" for n, (host, p) in _listeners(settings).items() if not _port_free(host, p)]
    if busy:
        raise VsynError(f"ports in use: {', '.join(busy)} (pick others with --port/--*-port)")

    write_properties(settings)
    if settings.fronted:
        front.write_config(settings)
        front.check(settings)  # a config nginx refuses fails here, before TorchServe starts
    settings.key_file.unlink(missing_ok=True)  # a stale key file would look like a started server
    cmd = [
        sys.executable, "-m", "ts.model_server", "--start", "--foreground",
        "--ts-config", str(settings.config_path), "--model-store", str(settings.model_store),
        "--log-config", str(settings.log_config_path),
    ]  # fmt: skip
    # Console output (the launcher's, the JVM's errors, the key keeper's lines) goes through a pipe into a log pump
    # that rotates logs/console.log; a plain redirect grew one file for as long as the server ran.
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=settings.run_dir,
            env=_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            start_new_session=True,  # own process group: stop() takes the JVM and its workers with it
        )
        settings.pid_file.write_text(f"{proc.pid}\n")
        front.start_log_pump(settings, read_end, settings.log_dir / "console.log")
        if settings.renew_keys:
            # Its own session (a process cannot join TorchServe's): it exits when TorchServe's leader is gone, and
            # `stop` ends it by its pid file.
            keeper = [sys.executable, "-m", "serve.keys", "--run-dir", str(settings.run_dir), "--leader", str(proc.pid)]
            kept = subprocess.Popen(keeper, cwd=settings.run_dir, stdin=subprocess.DEVNULL, stdout=write_end,
                                    stderr=write_end, start_new_session=True)  # fmt: skip
            settings.keeper_pid_file.write_text(f"{kept.pid}\n")
    finally:
        os.close(read_end)
        os.close(write_end)
    health = wait_ready(settings, wait_s, proc=proc, check_front=False)
    if settings.fronted:
        try:
            front.start(settings)
        except VsynError:
            stop(settings, drain_s=0)
            raise
        health = status(settings)
    return health


def _check_grpc_batches(settings: ServerSettings) -> None:
    """gRPC needs one request per batch: TorchServe tells a gRPC client about a handler's refusal only by failing the
    request's whole batch (a per-request status reaches REST clients only), which must not take batch mates with it.
    The batch size is fixed in the .mar (its model-config.yaml wins over config.properties)."""
    for name in settings.models:
        mar = settings.model_store / name.split("=", 1)[-1]
        try:
            with zipfile.ZipFile(mar) as z:
                batch = int((yaml.safe_load(z.read("model-config.yaml")) or {}).get("batchSize", 1))
        except (zipfile.BadZipFile, KeyError, ValueError, yaml.YAMLError):
            batch = 1  # no model-config: TorchServe's default batch size is 1
        if batch != 1:
            raise VsynError(f"--grpc needs models exported with --batch-size 1 ({mar.name} batches {batch}): "
                            "TorchServe reports a refusal to a gRPC client only by failing its whole batch")  # fmt: skip


def _listeners(settings: ServerSettings) -> dict[str, tuple[str, int]]:
    """Every (host, port) the server binds, by name."""
    ts = settings.torchserve_host
    out = {
        "inference port": (settings.host, settings.inference_port),
        "management port": (ts, settings.management_port),
        "metrics port": (ts, settings.metrics_port),
        "gRPC inference port": (settings.grpc_host, settings.grpc_inference_port),
        "gRPC management port": (settings.grpc_host, settings.grpc_management_port),
    }
    if settings.fronted:
        out["backend port"] = (ts, settings.backend_port)
    return out


def wait_ready(settings: ServerSettings, wait_s: float, proc: subprocess.Popen | None = None,
               check_front: bool = True) -> Health:  # fmt: skip
    deadline = time.monotonic() + wait_s
    health = status(settings, check_front=check_front)
    while not health.ready:
        if proc is not None and proc.poll() is not None:
            raise VsynError(f"TorchServe exited with code {proc.returncode}; see {_log_hint(settings)}")
        if time.monotonic() > deadline:
            stop(settings, drain_s=0)
            raise VsynError(f"TorchServe not ready after {wait_s:.0f} s ({health.detail}); see {_log_hint(settings)}")
        time.sleep(0.5)
        health = status(settings, check_front=check_front)
    return health


def _log_hint(settings: ServerSettings) -> str:
    return f"{settings.log_dir}/console.log and {settings.log_dir}/model_log.log"


def _refused_key(settings: ServerSettings, api: str) -> Health:
    """A running server that refuses our key: expired (past its time, not renewed) or otherwise refused."""
    try:
        key = read_key_file(settings.key_file)[api]
    except (OSError, ValueError, KeyError):
        return Health(True, False, {}, f"the {api} key was refused and the key file is unreadable", KEY_REFUSED)
    if key.seconds_left() <= 0:
        keeper = "the key keeper did not renew it" if settings.renew_keys else "key renewal is off"
        return Health(True, False, {}, f"the {api} key expired at {key.expires:%Y-%m-%dT%H:%M:%SZ} ({keeper}; "
                                       f"`vsyn serve token --run-dir {settings.run_dir}` renews it)", KEY_EXPIRED)  # fmt: skip
    return Health(True, False, {}, f"the {api} key in {settings.key_file} was refused", KEY_REFUSED)


def status(settings: ServerSettings, check_front: bool = True) -> Health:
    """Probe TorchServe directly (its own listener: ping with the inference key, worker states with the management
    key), then the front (nginx alive and listening)."""
    pid = _read_pid(settings)
    if not pid or not _group_alive(pid):
        return Health(False, False, {}, "not running", DOWN)
    if not settings.key_file.is_file():
        return Health(True, False, {}, "starting (no key file yet)", STARTING)
    client = VsynClient(settings)

    def get(url: str, api: str) -> requests.Response:
        """GET with the key file's `api` key, once more if the key was renewed in between (the keeper's race)."""
        key = client.key(api)
        r = client.http.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=2.0)
        if key_refused(r) and client.key(api) != key:
            r = client.http.get(url, headers={"Authorization": f"Bearer {client.key(api)}"}, timeout=2.0)
        return r

    try:
        r = get(settings.url("backend") + "/ping", "inference")
        if key_refused(r):
            return _refused_key(settings, "inference")
        healthy = r.status_code == 200 and r.json().get("status") == "Healthy"
        models = {}
        for name in settings.models:
            model = name.split("=", 1)[0]
            r = get(f"{settings.url('management')}/models/{model}", "management")
            if key_refused(r):
                return _refused_key(settings, "management")
            r.raise_for_status()
            models[model] = [w.get("status", "?") for d in r.json() for w in d.get("workers", [])]
    except (requests.RequestException, ValueError, KeyError) as exc:
        return Health(True, False, {}, f"not answering: {exc.__class__.__name__}", UNHEALTHY)
    if not healthy:
        return Health(True, False, models, "ping not Healthy", UNHEALTHY)
    if check_front and settings.fronted and not (front.alive(settings) and front.listening(settings)):
        return Health(True, True, models, f"the nginx front is not running; see {settings.log_dir}/front.log",
                      FRONT_DOWN)  # fmt: skip
    health = Health(True, True, models, "ok", READY)
    if not health.ready:
        health.state, health.detail = STARTING, "workers not READY yet"
    return health


def stop(settings: ServerSettings, grace_s: float = 30.0, drain_s: float | None = None) -> bool:
    """Drain and stop the front (in-flight requests finish, up to `drain_s`), then SIGTERM the TorchServe group and
    SIGKILL what is left after `grace_s`. False if nothing ran."""
    stopped_front = settings.fronted and front.stop(settings, drain_s=drain_s)
    pid = _read_pid(settings)
    if not pid or not _group_alive(pid):
        settings.pid_file.unlink(missing_ok=True)
        return stopped_front
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
    _stop_keeper(settings)
    settings.pid_file.unlink(missing_ok=True)
    settings.key_file.unlink(missing_ok=True)  # keys die with the server
    return True


def _stop_keeper(settings: ServerSettings) -> None:
    """End the key keeper (it would notice the server gone within a second anyway); the console's log pump then
    reads the end of its pipe and exits."""
    try:
        pid = int(settings.keeper_pid_file.read_text().strip())
        if b"serve.keys" in Path(f"/proc/{pid}/cmdline").read_bytes():  # not a reused pid
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
    except (OSError, ValueError):
        pass
    settings.keeper_pid_file.unlink(missing_ok=True)


def renew_keys(settings: ServerSettings, kinds: tuple[str, ...] = ("inference", "management")) -> dict[str, str]:
    """`vsyn serve token`: new keys now (the old ones stop working at once). Returns kind -> new expiry."""
    from serve.keys import renew

    pid = _read_pid(settings)
    if not pid or not _group_alive(pid) or not settings.key_file.is_file():
        raise VsynError(f"no server runs from {settings.run_dir}")
    out = {}
    for kind in kinds:
        try:
            key = renew(settings, kind)
        except requests.RequestException as exc:
            raise VsynError(f"could not renew the {kind} key: {exc}") from None
        out[kind] = f"{key.expires:%Y-%m-%dT%H:%M:%SZ}"
    return out


def _reap(pid: int) -> None:
    """Collect the leader if it is our own child (tests start and stop in one process), so it does not linger."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
