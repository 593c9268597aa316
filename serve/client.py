"""A small client for a vsyn server: reads the token from `key_file.json`, probes health, posts images.

Used by `vsyn serve status`, the tests and the benchmarks; also the reference for what a client must do with token
auth on. The key file is re-read on every call because the server renews its keys (`serve.keys`), and a call that
raced a renewal (refused with the old key while the file already holds a new one) is sent once more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from serve.config import ServerSettings
from serve.keys import read_key_file


def read_keys(key_file: str | Path) -> dict[str, str]:
    """{"inference": ..., "management": ..., "API": ...} from TorchServe's key file."""
    return {name: k.key for name, k in read_key_file(key_file).items()}


def key_refused(resp: requests.Response) -> bool:
    """TorchServe's answer to a missing, wrong or expired key (the same 400 for all three)."""
    if resp.status_code != 400:
        return False
    try:
        return resp.json().get("type") == "InvalidKeyException"
    except ValueError:
        return False


class VsynClient:
    def __init__(self, settings: ServerSettings, model: str = "vsyn", session: requests.Session | None = None):
        self.settings = settings
        self.model = model
        self.http = session or requests.Session()
        # A self-signed front certificate is its own trust anchor; without TLS this is unused.
        self.verify: bool | str = settings.tls_cert or True

    def key(self, api: str = "inference") -> str:
        return read_keys(self.settings.key_file)[api]

    def auth(self, api: str = "inference") -> dict[str, str]:
        """Bearer header for one API: "inference" (predictions, /ping), "management" (also /metrics)."""
        return {"Authorization": f"Bearer {self.key(api)}"}

    def _send(self, method: str, url: str, api: str, **kwargs: Any) -> requests.Response:
        """One call with the current key; once more if it was refused because the key was renewed meanwhile."""
        headers = kwargs.pop("headers", {})
        for attempt in (0, 1):
            key = self.key(api)
            resp = self.http.request(method, url, headers={**headers, "Authorization": f"Bearer {key}"},
                                     verify=self.verify, **kwargs)  # fmt: skip
            if attempt == 0 and key_refused(resp) and self.key(api) != key:
                continue
            return resp
        raise AssertionError("unreachable")

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        r = self._send("GET", self.settings.url("inference") + "/ping", "inference", timeout=timeout)
        r.raise_for_status()
        return r.json()

    def describe(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        url = f"{self.settings.url('management')}/models/{self.model}"
        r = self._send("GET", url, "management", timeout=timeout)
        r.raise_for_status()
        return r.json()

    def metrics(self, timeout: float = 5.0) -> str:
        r = self._send("GET", self.settings.url("metrics") + "/metrics", "management", timeout=timeout)
        r.raise_for_status()
        return r.text

    def predict(
        self,
        image: bytes,
        *,
        mask: bytes | None = None,
        content_type: str = "application/octet-stream",
        timeout: float = 300.0,
        **options: Any,
    ) -> requests.Response:
        """POST one image. Without a mask: raw body plus options in X-Vsyn-* headers (TorchServe 0.12 drops query
        strings); with one: multipart with the options as form fields."""
        url = f"{self.settings.url('inference')}/predictions/{self.model}"
        params = {k: str(v) for k, v in options.items() if v is not None}
        if mask is None:
            headers = {"Content-Type": content_type}
            headers |= {f"X-Vsyn-{k.replace('_', '-').title()}": v for k, v in params.items()}
            return self._send("POST", url, "inference", data=image, headers=headers, timeout=timeout)
        files = {"image": ("image", image, content_type), "mask": ("mask", mask, content_type)}
        return self._send("POST", url, "inference", data=params, files=files, timeout=timeout)
