"""Open shard URLs (local path, ``file://``, ``http(s)://``, ``s3://``) as byte streams that survive transient faults.

Remote opens and reads go through one retry policy: transient failures (timeouts, dropped connections, HTTP 5xx
or 429, S3 throttling) are retried with exponential backoff, and a read that breaks mid-stream resumes with a
``Range`` request at the byte where it stopped, so a flaky network costs a retry, not a shard. Permanent failures
(404, access denied, a missing file) raise at once. Every network call has a timeout: nothing waits forever.

The S3 endpoint and credentials come only from the standard AWS environment/config (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``~/.aws/config``, ...), never from code or logs. The handlers are also registered with
webdataset's ``gopen`` so plain ``wds.WebDataset("s3://...")`` pipelines work the same way.
"""

from __future__ import annotations

import http.client
import io
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import lru_cache
from typing import BinaryIO

import webdataset as wds

TIMEOUT_S = float(os.environ.get("VSYN_DATA_TIMEOUT", "30"))
RETRIES = int(os.environ.get("VSYN_DATA_RETRIES", "5"))
_BACKOFF_S = 0.2
_BACKOFF_MAX_S = 5.0


class TransientError(OSError):
    """A failure worth retrying (the same request may well succeed a moment later)."""


def _backoff(attempt: int) -> None:
    time.sleep(min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.0))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException)):
        return True
    try:
        import botocore.exceptions as bce
    except ImportError:  # boto3 is a dependency, but only s3:// needs it
        return False
    if isinstance(exc, bce.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status == 429 or code in {"SlowDown", "Throttling", "RequestTimeout"}
    return isinstance(
        exc, (bce.ConnectionError, bce.HTTPClientError, bce.ResponseStreamingError, bce.IncompleteReadError)
    )


def with_retries(fn: Callable[[], object]) -> object:
    """Call ``fn`` until it succeeds, retrying transient errors with backoff; re-raise anything else."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _is_transient(exc) or attempt >= RETRIES:
                raise
            _backoff(attempt)
            attempt += 1


class _ResumingReader(io.RawIOBase):
    """A raw stream over ``open_at(offset)`` that reopens at the current offset when a read fails transiently."""

    def __init__(self, open_at: Callable[[int], BinaryIO]) -> None:
        self._open_at = open_at
        self._pos = 0
        self._body: BinaryIO | None = with_retries(lambda: open_at(0))  # type: ignore[assignment]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        attempt = 0
        while True:
            try:
                if self._body is None:
                    self._body = self._open_at(self._pos)
                n = self._body.readinto(buffer) if hasattr(self._body, "readinto") else self._read_copy(buffer)
                owed = getattr(self._body, "length", None)  # http.client: bytes the server promised but not sent
                if n == 0 and len(buffer) and owed:
                    # a dropped connection reads as a silent EOF in http.client, not as an error
                    raise TransientError(f"connection closed with {owed} bytes still to come")
                self._pos += n
                return n
            except Exception as exc:
                if not _is_transient(exc) or attempt >= RETRIES:
                    raise
                self._close_body()
                _backoff(attempt)
                attempt += 1

    def _read_copy(self, buffer: memoryview) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _close_body(self) -> None:
        body, self._body = self._body, None
        try:
            if body is not None:
                body.close()
        except Exception:  # a broken connection may fail to close; it is being replaced anyway
            pass

    def close(self) -> None:
        if not self.closed:
            self._close_body()
        super().close()


def _http_open_at(url: str) -> Callable[[int], BinaryIO]:
    def open_at(offset: int) -> BinaryIO:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
        if offset and response.status != 206:
            response.close()
            raise TransientError(f"{url}: server ignored the Range request while resuming at byte {offset}")
        return response

    return open_at


def s3_client():  # noqa: ANN201 - boto3 clients have no importable static type
    """One boto3 S3 client per process; endpoint, region and credentials from the standard AWS env/config."""
    return _s3_client_for(os.getpid())  # keyed by pid: a client inherited through fork() is not safe to reuse


@lru_cache(maxsize=2)
def _s3_client_for(pid: int):  # noqa: ANN202
    import boto3
    from botocore.config import Config

    # boto3's own retries cover the request; _ResumingReader covers the body stream.
    config = Config(
        connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S, retries={"max_attempts": RETRIES, "mode": "standard"}
    )
    return boto3.client("s3", config=config)


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key/parts`` -> ``("bucket", "key/parts")``."""
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_open_at(url: str) -> Callable[[int], BinaryIO]:
    bucket, key = split_s3_url(url)

    def open_at(offset: int) -> BinaryIO:
        kwargs = {"Range": f"bytes={offset}-"} if offset else {}
        return s3_client().get_object(Bucket=bucket, Key=key, **kwargs)["Body"]

    return open_at


def open_url(url: str) -> BinaryIO:
    """A buffered binary stream over ``url``; remote streams retry and resume transparently."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return io.BufferedReader(_ResumingReader(_http_open_at(url)), buffer_size=1 << 20)
    if scheme == "s3":
        return io.BufferedReader(_ResumingReader(_s3_open_at(url)), buffer_size=1 << 20)
    if scheme == "file":
        return open(urllib.request.url2pathname(urllib.parse.urlparse(url).path), "rb")
    if scheme and len(scheme) > 1:  # "C:" is a drive letter, not a scheme
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r} (use a path, http(s)://, s3:// or file://)")
    return open(url, "rb")


def read_bytes(url: str) -> bytes:
    """The whole object at ``url`` (small files: manifests)."""
    with open_url(url) as f:
        return f.read()


def _gopen_handler(url: str, mode: str = "rb", bufsize: int = 8192, **_: object) -> BinaryIO:
    if mode != "rb":
        raise ValueError(f"{url}: only mode 'rb' is supported, not {mode!r}")
    return open_url(url)


for _scheme in ("http", "https", "s3"):
    wds.gopen_schemes[_scheme] = _gopen_handler
