"""TorchServe's `config.properties` and log config, written from one dataclass with safe defaults.

TorchServe 0.12's own defaults suit a laptop demo, not a deployment: it binds gRPC on all interfaces, keeps logs in
the working directory, accepts model URLs from anywhere, caps responses at ~6.5 MB (a long GIF is more), expires
its keys after an hour and rotates logs by day without bound. Every choice below is deliberate; the `render_*`
functions are pure so they can be tested without a server. The nginx front's settings live here too (one
`server.json` describes a whole server); its config is written by `serve.front`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vsyn.errors import VsynError

MIB = 1024 * 1024
FRONTS = ("nginx", "none")
# TorchServe's gRPC listeners cannot be switched off (a failed bind stops the server); the handler refuses what
# arrives over them unless the server was started with gRPC on, which it learns from this variable.
GRPC_ENV = "VSYN_GRPC"


@dataclass
class ServerSettings:
    """Where and how one TorchServe instance runs. Saved as `server.json` in the run dir for `stop`/`status`."""

    model_store: Path
    run_dir: Path
    host: str = "127.0.0.1"  # the public address (the front's, or TorchServe's with front "none")
    inference_port: int = 8080  # the public inference port
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_host: str = "127.0.0.1"
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    models: list[str] = field(default_factory=lambda: ["vsyn=vsyn.mar"])
    max_request_mib: int = 16  # a 12 MB photo base64-encoded in JSON still fits
    max_response_mib: int = 256  # a few hundred frames of GIF
    token_expiration_min: float = 60  # TorchServe's key lifetime; the key keeper renews them at half-life
    renew_keys: bool = True  # run the key keeper (off: keys die after token_expiration_min unless renewed by hand)
    job_queue_size: int = 256  # queued requests per model before TorchServe answers 503
    default_response_timeout_s: int = 120
    grpc: bool = False  # serve predictions over TorchServe's gRPC listeners (needs models with batch size 1)
    # The front: nginx before TorchServe, which then listens on 127.0.0.1 only ("none": TorchServe faces clients).
    front: str = "nginx"
    backend_port: int = 8083  # TorchServe's inference port on 127.0.0.1 behind the front
    tls_cert: str | None = None  # PEM certificate (chain) and key: the front speaks HTTPS
    tls_key: str | None = None
    header_timeout_s: float = 10.0  # the whole request header must arrive within this
    body_timeout_s: float = 10.0  # longest pause between two reads of a request body
    idle_timeout_s: float = 15.0  # keep-alive connections idle longer than this are closed
    send_timeout_s: float = 30.0  # longest pause between two writes of a response to a slow reader
    connections_per_client: int = 8  # requests in progress per client address: one default batch (0: none)
    rate_per_client: float = 10.0  # requests/s per client address, sustained (0: no limit) ...
    burst_per_client: int = 20  # ... with this many at once above it
    front_workers: int = 2  # nginx worker processes
    front_connections: int = 4096  # connections per nginx worker, idle ones included
    drain_s: float = 60.0  # `stop`: how long in-flight requests may take to finish
    log_max_mib: float = 32.0  # each log file is rotated at this size ...
    log_backups: int = 5  # ... keeping this many old ones (so a log stream takes at most (1 + n) x the size)

    def __post_init__(self) -> None:
        self.model_store = Path(self.model_store).resolve()
        self.run_dir = Path(self.run_dir).resolve()
        ports = self.ports()
        if len(set(ports.values())) != len(ports):
            raise VsynError(f"server ports must be distinct: {ports}")
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise VsynError(f"{name} {port} is not a TCP port")
        if self.front == "nginx" and self.backend_port in ports.values():
            raise VsynError(f"the backend port {self.backend_port} must differ from the server's other ports")
        if self.max_request_mib < 1 or self.max_response_mib < 1:
            raise VsynError("max request/response sizes must be >= 1 MiB")
        if self.front not in FRONTS:
            raise VsynError(f"front must be one of {', '.join(FRONTS)}, not {self.front!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise VsynError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if self.tls_cert and self.front != "nginx":
            raise VsynError("TLS is served by the front: it needs --front nginx")
        for name in ("tls_cert", "tls_key"):
            value = getattr(self, name)
            if value is not None:
                path = Path(value).resolve()
                if not path.is_file():
                    raise VsynError(f"{name.replace('_', ' ')} {value} is not a file")
                setattr(self, name, str(path))
        positive = ("token_expiration_min", "header_timeout_s", "body_timeout_s", "idle_timeout_s", "send_timeout_s",
                    "front_workers", "front_connections", "log_max_mib")
        bad = [k for k in positive if not getattr(self, k) > 0]
        bad += [k for k in ("connections_per_client", "rate_per_client", "burst_per_client", "drain_s", "log_backups")
                if getattr(self, k) < 0]
        if bad:
            raise VsynError(f"server settings out of range: {', '.join(f'{k}={getattr(self, k)}' for k in bad)}")

    def ports(self) -> dict[str, int]:
        return {
            "inference port": self.inference_port,
            "management port": self.management_port,
            "metrics port": self.metrics_port,
            "gRPC inference port": self.grpc_inference_port,
            "gRPC management port": self.grpc_management_port,
        }

    # Paths inside the run dir: everything TorchServe writes stays here, nothing in /tmp or the cwd.
    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def settings_path(self) -> Path:
        return self.run_dir / "server.json"

    @property
    def key_file(self) -> Path:
        return self.run_dir / "key_file.json"  # TorchServe writes it into its working directory

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.run_dir / "tmp"  # JVM tmpdir: model extraction, worker sockets, TorchServe's pid file

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "torchserve.pid"

    @property
    def keeper_pid_file(self) -> Path:
        return self.run_dir / "keys.pid"

    @property
    def log_config_path(self) -> Path:
        return self.run_dir / "log4j2.xml"

    @property
    def fronted(self) -> bool:
        return self.front != "none"

    @property
    def torchserve_host(self) -> str:
        """Where TorchServe's REST listeners bind: loopback behind a front, the public address without one."""
        return "127.0.0.1" if self.fronted else self.host

    @property
    def front_dir(self) -> Path:
        return self.run_dir / "front"  # nginx.conf, vsyn.js, pid file, temp files

    def url(self, api: str = "inference") -> str:
        """Where a client on this host reaches `api`: "inference" (through the front when there is one),
        "backend" (TorchServe's own inference listener), "management" or "metrics" (TorchServe's)."""
        if api == "inference":
            host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
            scheme = "https" if self.tls_cert else "http"
            port = self.inference_port
        else:
            host, scheme = self.torchserve_host, "http"
            host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
            port = {"backend": self.backend_port if self.fronted else self.inference_port,
                    "management": self.management_port, "metrics": self.metrics_port}[api]  # fmt: skip
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def save(self) -> None:
        data = asdict(self)
        data["model_store"], data["run_dir"] = str(self.model_store), str(self.run_dir)
        self.settings_path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> ServerSettings:
        path = Path(run_dir) / "server.json"
        if not path.is_file():
            raise VsynError(f"{run_dir} holds no server.json: no server was started there")
        return cls(**json.loads(path.read_text()))


def _address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def render_properties(s: ServerSettings) -> str:
    """The `config.properties` text for `s`."""
    # Only .mar files in our own model store may ever be loaded (registration is off anyway; defence in depth).
    allowed = "file://" + re.escape(str(s.model_store)) + r"/[^/]+\.mar"
    host = s.torchserve_host
    lines = {
        "inference_address": _address(host, s.backend_port if s.fronted else s.inference_port),
        "management_address": _address(host, s.management_port),
        "metrics_address": _address(host, s.metrics_port),
        "grpc_inference_address": s.grpc_host,
        "grpc_inference_port": s.grpc_inference_port,
        "grpc_management_address": s.grpc_host,
        "grpc_management_port": s.grpc_management_port,
        "model_store": s.model_store,
        "load_models": ",".join(s.models),
        "allowed_urls": allowed,
        # Token auth stays on (TorchServe's default); spelled out so nobody flips it by accident.
        "disable_token_authorization": "false",
        "token_expiration_min": f"{s.token_expiration_min:g}",
        "enable_model_api": "false",  # no model (un)registration over HTTP
        "enable_envvars_config": "false",  # the environment must not silently override this file
        "install_py_dep_per_model": "false",  # a .mar must not pip-install anything
        # JSON bodies reach the handler as bytes: it parses them itself, refusing duplicate keys and numbers too
        # long to convert (TorchServe's own decoding keeps the last duplicate and logs a traceback for the rest).
        "decode_input_request": "false",
        "metrics_mode": "prometheus",
        "enable_metrics_api": "true",
        "max_request_size": s.max_request_mib * MIB,
        "max_response_size": s.max_response_mib * MIB,
        "job_queue_size": s.job_queue_size,
        "default_response_timeout": s.default_response_timeout_s,
        # No /tmp/hsperfdata_<user> droppings; die loudly instead of limping on when the heap runs out.
        "vmargs": "-XX:-UsePerfData -XX:+ExitOnOutOfMemoryError",
        # Our handler does its own, stricter pixel cap before decoding.
        "limit_max_image_pixels": "true",
    }
    # java.util.Properties reads backslashes as escapes: double them so the regex arrives intact.
    body = "\n".join(f"{k}={str(v).replace(chr(92), chr(92) * 2)}" for k, v in lines.items())
    return f"# Written by `vsyn serve start`; regenerated on every start.\n{body}\n"


# TorchServe's loggers, each to its own size-rotated file. TorchServe's default log4j2.xml rolls by day without
# deleting old days and copies every line (an access-log line per request) to stdout as well.
_LOGS = {  # appender -> (file stem, logger name, pattern, metrics location?)
    "access_log": ("access_log", "ACCESS_LOG", "%d{ISO8601} - %m%n", False),
    "model_log": ("model_log", "MODEL_LOG", "%d{ISO8601} [%-5p] %t %c - %m%n", False),
    "model_metrics": ("model_metrics", "MODEL_METRICS", "%d{ISO8601} - %m%n", True),
    "ts_log": ("ts_log", "org.pytorch.serve", "%d{ISO8601} [%-5p] %t %c - %m%n", False),
    "ts_metrics": ("ts_metrics", "TS_METRICS", "%d{ISO8601} - %m%n", True),
}


def log_file_bytes(s: ServerSettings) -> int:
    return max(1024, int(s.log_max_mib * MIB))


def render_log_config(s: ServerSettings) -> str:
    """A log4j2.xml for TorchServe: every log size-rotated with `log_backups` gzipped copies, nothing per request on
    stdout (only errors reach the console log, which `serve.logpump` rotates in turn)."""
    size = log_file_bytes(s)
    appenders, loggers = [], []
    for name, (stem, logger, pattern, metrics) in _LOGS.items():
        where = "${env:METRICS_LOCATION:-logs}" if metrics else "${env:LOG_LOCATION:-logs}"
        appenders.append(
            f'    <RollingFile name="{name}" fileName="{where}/{stem}.log" filePattern="{where}/{stem}.%i.log.gz">\n'
            f'      <PatternLayout pattern="{pattern}"/>\n'
            f'      <Policies><SizeBasedTriggeringPolicy size="{size}"/></Policies>\n'
            f'      <DefaultRolloverStrategy max="{s.log_backups}" fileIndex="min"/>\n'
            "    </RollingFile>"
        )
        level = "debug" if logger == "org.pytorch.serve" else ("info" if logger == "ACCESS_LOG" else "all")
        loggers.append(f'    <Logger name="{logger}" level="{level}" additivity="false">'
                       f'<AppenderRef ref="{name}"/><AppenderRef ref="STDOUT" level="error"/></Logger>')  # fmt: skip
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Written by `vsyn serve start`; regenerated on every start. -->",
        "<Configuration>",
        "  <Appenders>",
        '    <Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>'
        "</Console>",
        *appenders,
        "  </Appenders>",
        "  <Loggers>",
        '    <Logger name="io.netty" level="error"/>',
        '    <Logger name="org.apache" level="off"/>',
        *loggers,
        '    <Root level="info"><AppenderRef ref="ts_log"/><AppenderRef ref="STDOUT" level="error"/></Root>',
        "  </Loggers>",
        "</Configuration>",
        "",
    ])  # fmt: skip


def write_properties(s: ServerSettings) -> Path:
    for d in (s.run_dir, s.log_dir, s.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    s.config_path.write_text(render_properties(s))
    s.log_config_path.write_text(render_log_config(s))
    s.save()
    return s.config_path
