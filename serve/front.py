"""The nginx front: the only thing clients talk to, with TorchServe on 127.0.0.1 behind it.

TorchServe 0.12 is in limited maintenance (no security fixes) and has no idle or header timeout: half-sent
connections piled up until the JVM ran out of files. nginx (from Debian) takes the network side: it reads whole
requests before TorchServe sees a byte (header, body and idle timeouts, the body-size limit), limits connections
and requests per client address (429), exposes `POST /predictions/<model>` and `GET /ping` only (no `OPTIONS /`,
no `/api-description`), refuses repeated option headers (TorchServe keeps only the last), turns curl's default
form content type into a raw body, answers every refusal of its own as JSON in TorchServe's error shape, speaks TLS
when given a certificate, and drains in-flight requests on stop (SIGQUIT).

Every file lives in `<run-dir>/front/`; its output goes through `serve.logpump` into `<run-dir>/logs/front.log`.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from serve.config import ServerSettings, log_file_bytes
from vsyn.errors import VsynError

INSTALL_HINT = "install it with `sudo serve/install-nginx` (Debian: apt-get install nginx libnginx-mod-http-js)"
_JS_MODULE = "ngx_http_js_module.so"
_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/local/nginx/modules",
                "/etc/nginx/modules")  # fmt: skip

# Statuses nginx itself may answer with -> (status the client gets, type, message): each a JSON body like
# TorchServe's own errors. 494 and 497 are nginx's internal codes for an oversized header and plain HTTP to a TLS port.
_ERRORS = {
    400: (400, "BadRequest", "the request could not be read"),
    403: (403, "Forbidden", "forbidden"),
    404: (404, "NotFound", "not found: this server answers POST /predictions/<model> and GET /ping"),
    405: (405, "MethodNotAllowed", "method not allowed: POST /predictions/<model>, GET /ping"),
    408: (408, "RequestTimeout", "the request did not arrive in time"),
    413: (413, "ContentTooLarge", "the request body is larger than the limit of {max_request_mib} MiB"),
    414: (414, "URITooLong", "the request URI is too long"),
    429: (429, "TooManyRequests", "too many requests from this address: {limits}"),
    494: (431, "RequestHeaderFieldsTooLarge", "the request headers are too large"),
    497: (400, "BadRequest", "this port speaks HTTPS"),
    500: (500, "InternalServerError", "internal error in the front"),
    502: (502, "BadGateway", "the model server is not answering"),
    503: (503, "ServiceUnavailable", "the model server is not available"),
    504: (504, "GatewayTimeout", "the model server did not answer in time"),
}

# TorchServe keeps one value per header name (the last), so a repeated option header would be answered as if it
# had been sent once. nginx's own variables see only the first: njs reads the raw header list.
NJS = r"""// Written by `vsyn serve start`; regenerated on every start.
var CHECKED = /^(x-vsyn-|content-type$|authorization$)/;

// The first option (or content-type, authorization) header a request repeats, '' when none is.
function repeatedHeader(r) {
    var seen = {};
    var raw = r.rawHeadersIn;
    for (var i = 0; i < raw.length; i++) {
        var name = raw[i][0].toLowerCase();
        if (!CHECKED.test(name)) {
            continue;
        }
        if (seen[name]) {
            return raw[i][0].replace(/[^A-Za-z0-9-]/g, '?');
        }
        seen[name] = true;
    }
    return '';
}

export default {repeatedHeader};
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)
    if not found:
        raise VsynError(f"the serving front needs nginx: {INSTALL_HINT}; or pass --front none")
    return found


@functools.lru_cache(maxsize=None)
def js_module() -> str:
    """Path of nginx's JavaScript module (Debian: libnginx-mod-http-js)."""
    dirs = list(_MODULE_DIRS)
    try:
        info = subprocess.run([nginx_binary(), "-V"], capture_output=True, text=True, timeout=10).stderr
        match = re.search(r"--modules-path=(\S+)", info)
        if match:
            dirs.insert(0, match.group(1))
    except (OSError, subprocess.SubprocessError):
        pass
    for d in dirs:
        if (Path(d) / _JS_MODULE).is_file():
            return str(Path(d) / _JS_MODULE)
    raise VsynError(f"nginx's JavaScript module ({_JS_MODULE}) is missing: {INSTALL_HINT}")


def _rate(per_second: float) -> str:
    return f"{per_second:g}r/s" if float(per_second).is_integer() else f"{max(1, round(per_second * 60))}r/m"


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _json(code: int, s: ServerSettings) -> tuple[int, str]:
    status, kind, message = _ERRORS[code]
    limits = []
    if s.rate_per_client:
        limits.append(f"at most {s.rate_per_client:g} per second (bursts of {s.burst_per_client})")
    if s.connections_per_client:
        limits.append(f"at most {s.connections_per_client} at once")
    message = message.format(max_request_mib=s.max_request_mib, limits=" and ".join(limits))
    return status, json.dumps({"code": status, "type": kind, "message": message})


def model_names(s: ServerSettings) -> list[str]:
    return [m.split("=", 1)[0] for m in s.models]


def render_nginx_conf(s: ServerSettings, js_module_path: str, user: str | None = None) -> str:
    """nginx.conf for the front of `s` (pure: the tests read it without starting nginx)."""
    d = s.front_dir
    models = "|".join(re.escape(m) for m in model_names(s))
    ssl = " ssl" if s.tls_cert else ""
    limits = []
    if s.connections_per_client:
        limits.append(f"limit_conn vsyn_conn {s.connections_per_client};")
    if s.rate_per_client:
        limits.append(f"limit_req zone=vsyn_rate burst={s.burst_per_client} nodelay;")
    tls = []
    if s.tls_cert:
        tls = [f"ssl_certificate {s.tls_cert};", f"ssl_certificate_key {s.tls_key};",
               "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_session_cache shared:vsyn_tls:1m;"]  # fmt: skip
    errors = []
    for code in _ERRORS:
        status, body = _json(code, s)
        errors.append(f"error_page {code} @e{code};")
        errors.append(f"location @e{code} {{ default_type application/json; return {status} '{body}'; }}")
    proxy = [
        "            proxy_pass http://torchserve;",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";  # keep-alive connections to TorchServe',
        "            proxy_set_header Host $host;",
        "            proxy_set_header X-Forwarded-For $remote_addr;",
    ]
    lines = [
        "# Written by `vsyn serve start`; regenerated on every start.",
        f"load_module {js_module_path};",
        "daemon off;  # `vsyn serve` holds the master's pid",
        f"worker_processes {s.front_workers};",
        *([f"user {user};  # workers run as the user who started the server"] if user else []),
        f"pid {d}/nginx.pid;",
        "error_log stderr warn;  # into logs/front.log (rotated)",
        f"worker_rlimit_nofile {2 * s.front_connections + 64};",
        f"worker_shutdown_timeout {s.drain_s:g}s;  # stop: in-flight requests get this long to finish",
        f"events {{ worker_connections {s.front_connections}; }}",
        "http {",
        "    server_tokens off;",
        "    default_type application/json;",
        f"    client_body_temp_path {d}/tmp/body;",
        f"    proxy_temp_path {d}/tmp/proxy;",
        f"    fastcgi_temp_path {d}/tmp/fastcgi;",
        f"    uwsgi_temp_path {d}/tmp/uwsgi;",
        f"    scgi_temp_path {d}/tmp/scgi;",
        "    log_format vsyn '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent $request_time '",
        "                    'upstream $upstream_status $upstream_response_time';",
        "    access_log /dev/stdout vsyn;",
        "",
        "    # Whole requests are read here before TorchServe sees a byte; slow or idle clients are cut off.",
        f"    client_header_timeout {s.header_timeout_s:g}s;",
        f"    client_body_timeout {s.body_timeout_s:g}s;",
        f"    keepalive_timeout {s.idle_timeout_s:g}s;",
        f"    send_timeout {s.send_timeout_s:g}s;",
        "    reset_timedout_connection on;",
        f"    client_max_body_size {s.max_request_mib}m;",
        "    client_body_buffer_size 1m;",
        "    client_header_buffer_size 1k;",
        "    large_client_header_buffers 4 8k;",
        "    proxy_request_buffering on;",
        "    proxy_connect_timeout 5s;",
        "    proxy_send_timeout 60s;",
        f"    proxy_read_timeout {s.default_response_timeout_s + 30}s;",
        "",
        "    limit_conn_zone $binary_remote_addr zone=vsyn_conn:10m;",
        f"    limit_req_zone $binary_remote_addr zone=vsyn_rate:10m rate={_rate(s.rate_per_client or 1)};",
        "    limit_conn_status 429;",
        "    limit_req_status 429;",
        "",
        "    # curl --data-binary sends application/x-www-form-urlencoded unless told otherwise, and TorchServe then",
        "    # fails to decode a form (500) before the handler runs; the handler reads the image format from the bytes.",
        "    map $http_content_type $vsyn_content_type {",
        "        ~*^application/x-www-form-urlencoded application/octet-stream;",
        "        default $http_content_type;",
        "    }",
        f"    js_import vsyn from {d}/vsyn.js;",
        "    js_set $vsyn_repeated_header vsyn.repeatedHeader;",
        "",
        "    upstream torchserve {",
        f"        server 127.0.0.1:{s.backend_port};",
        "        keepalive 32;",
        "    }",
        "",
        "    server {",
        f"        listen {_listen(s.host, s.inference_port)}{ssl};",
        *[f"        {line}" for line in tls + limits],
        *[f"        {line}" for line in errors],
        "",
        "        location = /ping {",
        "            if ($request_method != GET) { return 405; }",
        *proxy,
        "        }",
        f"        location ~ ^/predictions/({models})$ {{",
        "            if ($request_method != POST) { return 405; }",
        "            if ($vsyn_repeated_header) {",
        "                return 400 '{\"code\": 400, \"type\": \"BadRequest\", \"message\": "
        "\"header $vsyn_repeated_header appears more than once\"}';",
        "            }",
        *proxy,
        "            proxy_set_header Content-Type $vsyn_content_type;",
        "        }",
        "",
        "        location / { return 404; }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _user() -> str | None:
    """As root, nginx would run its workers as `nobody`, who cannot read a private run dir: keep the caller's user."""
    return pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None


def write_config(s: ServerSettings) -> Path:
    d = s.front_dir
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "vsyn.js").write_text(NJS)
    conf = d / "nginx.conf"
    conf.write_text(render_nginx_conf(s, js_module(), _user()))
    return conf


def _command(s: ServerSettings, *extra: str) -> list[str]:
    return [nginx_binary(), "-p", str(s.front_dir), "-c", str(s.front_dir / "nginx.conf"), "-e", "stderr", *extra]


def check(s: ServerSettings) -> None:
    """`nginx -t`: a config nginx refuses fails `vsyn serve start` before TorchServe is started."""
    result = subprocess.run(_command(s, "-t", "-q"), capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise VsynError(f"nginx refused the front's config {s.front_dir / 'nginx.conf'}: "
                        f"{(result.stderr or result.stdout).strip()[-1500:]}")  # fmt: skip


def pid(s: ServerSettings) -> int | None:
    try:
        return int((s.front_dir / "nginx.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(s: ServerSettings) -> bool:
    p = pid(s)
    if not p:
        return False
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def listening(s: ServerSettings, timeout: float = 1.0) -> bool:
    host = "127.0.0.1" if s.host in ("0.0.0.0", "", "::") else s.host
    try:
        with socket.create_connection((host, s.inference_port), timeout=timeout):
            return True
    except OSError:
        return False


def start(s: ServerSettings, wait_s: float = 30.0) -> int:
    """Start nginx (config already written and checked); its output goes through a log pump. Returns its pid."""
    (s.front_dir / "nginx.pid").unlink(missing_ok=True)
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(_command(s), cwd=s.front_dir, stdin=subprocess.DEVNULL, stdout=write_end,
                                stderr=write_end, start_new_session=True)  # fmt: skip
        start_log_pump(s, read_end, s.log_dir / "front.log")
    finally:
        os.close(read_end)
        os.close(write_end)
    deadline = time.monotonic() + wait_s
    while not (pid(s) == proc.pid and listening(s)):
        if proc.poll() is not None:
            raise VsynError(f"nginx exited with code {proc.returncode}; see {s.log_dir / 'front.log'}")
        if time.monotonic() > deadline:
            stop(s, drain_s=0)
            raise VsynError(f"nginx not listening after {wait_s:.0f} s; see {s.log_dir / 'front.log'}")
        time.sleep(0.05)
    return proc.pid


def start_log_pump(s: ServerSettings, read_end: int, path: Path) -> subprocess.Popen:
    """A `serve.logpump` reading `read_end` into `path` (rotated). Its own session: no terminal signal reaches it,
    and it exits by itself once every process writing into the pipe has closed it."""
    cmd = [sys.executable, "-m", "serve.logpump", str(path), "--max-bytes", str(log_file_bytes(s)),
           "--backups", str(s.log_backups)]  # fmt: skip
    return subprocess.Popen(cmd, stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def stop(s: ServerSettings, drain_s: float | None = None) -> bool:
    """Graceful stop: nginx closes its listeners, lets in-flight requests finish (up to `drain_s`), then exits.
    Escalates to SIGTERM, then SIGKILL, if it has not gone 5 s after that. False if nginx was not running."""
    p = pid(s)
    if not p or not alive(s):
        return False
    drain_s = s.drain_s if drain_s is None else drain_s
    for sig, wait in ((signal.SIGQUIT, drain_s + 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            if sig == signal.SIGKILL:
                os.killpg(p, sig)  # the master cannot stop its workers any more: take the whole group
            else:
                os.kill(p, sig)  # the master passes it on to its workers
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while alive(s) and time.monotonic() < deadline:
            _reap(p)
            time.sleep(0.05)
        if not alive(s):
            break
    _reap(p)
    if not alive(s):
        (s.front_dir / "nginx.pid").unlink(missing_ok=True)
    return True


def _reap(p: int) -> None:
    try:
        os.waitpid(p, os.WNOHANG)
    except ChildProcessError:
        pass
