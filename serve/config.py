"""TorchServe's `config.properties`, written from one dataclass with safe defaults.

TorchServe 0.12's own defaults suit a laptop demo, not a deployment: it binds gRPC on all interfaces, keeps logs in
the working directory, accepts model URLs from anywhere and caps responses at ~6.5 MB (a long GIF is more). Every
choice below is deliberate; `render_properties` is pure so it can be tested without a server.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vsyn.errors import VsynError

MIB = 1024 * 1024


@dataclass
class ServerSettings:
    """Where and how one TorchServe instance runs. Saved as `server.json` in the run dir for `stop`/`status`."""

    model_store: Path
    run_dir: Path
    host: str = "127.0.0.1"  # REST interfaces; anything else is an explicit decision of the operator
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_host: str = "127.0.0.1"
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    models: list[str] = field(default_factory=lambda: ["vsyn=vsyn.mar"])
    max_request_mib: int = 16  # a 12 MB photo base64-encoded in JSON still fits
    max_response_mib: int = 256  # a few hundred frames of GIF
    token_expiration_min: int = 60
    job_queue_size: int = 256  # queued requests per model before TorchServe answers 503
    default_response_timeout_s: int = 120

    def __post_init__(self) -> None:
        self.model_store = Path(self.model_store).resolve()
        self.run_dir = Path(self.run_dir).resolve()
        ports = self.ports()
        if len(set(ports.values())) != len(ports):
            raise VsynError(f"server ports must be distinct: {ports}")
        for name, port in ports.items():
            if not 0 < port < 65536:
                raise VsynError(f"{name} {port} is not a TCP port")
        if self.max_request_mib < 1 or self.max_response_mib < 1:
            raise VsynError("max request/response sizes must be >= 1 MiB")

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

    def url(self, api: str = "inference") -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        port = {"inference": self.inference_port, "management": self.management_port, "metrics": self.metrics_port}[api]
        return f"http://{host}:{port}"

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
    lines = {
        "inference_address": _address(s.host, s.inference_port),
        "management_address": _address(s.host, s.management_port),
        "metrics_address": _address(s.host, s.metrics_port),
        "grpc_inference_address": s.grpc_host,
        "grpc_inference_port": s.grpc_inference_port,
        "grpc_management_address": s.grpc_host,
        "grpc_management_port": s.grpc_management_port,
        "model_store": s.model_store,
        "load_models": ",".join(s.models),
        "allowed_urls": allowed,
        # Token auth stays on (TorchServe's default); spelled out so nobody flips it by accident.
        "disable_token_authorization": "false",
        "token_expiration_min": s.token_expiration_min,
        "enable_model_api": "false",  # no model (un)registration over HTTP
        "enable_envvars_config": "false",  # the environment must not silently override this file
        "install_py_dep_per_model": "false",  # a .mar must not pip-install anything
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


def write_properties(s: ServerSettings) -> Path:
    for d in (s.run_dir, s.log_dir, s.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    s.config_path.write_text(render_properties(s))
    s.save()
    return s.config_path
