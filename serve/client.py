"""A small client for a vsyn TorchServe: reads the token from `key_file.json`, probes health, posts images.

Used by `vsyn serve status`, the tests and the benchmark; also the reference for what a client must do with token
auth on. The key file is re-read on every call because TorchServe rewrites it when keys are regenerated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from serve.config import ServerSettings


def read_keys(key_file: str | Path) -> dict[str, str]:
    """{"inference": ..., "management": ..., "API": ...} from TorchServe's key file."""
    data = json.loads(Path(key_file).read_text())
    return {name: entry["key"] for name, entry in data.items() if isinstance(entry, dict) and "key" in entry}


class VsynClient:
    def __init__(self, settings: ServerSettings, model: str = "vsyn", session: requests.Session | None = None):
        self.settings = settings
        self.model = model
        self.http = session or requests.Session()

    def auth(self, api: str = "inference") -> dict[str, str]:
        """Bearer header for one API: "inference" (predictions, /ping), "management" (also /metrics)."""
        return {"Authorization": f"Bearer {read_keys(self.settings.key_file)[api]}"}

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        r = self.http.get(self.settings.url("inference") + "/ping", headers=self.auth("inference"), timeout=timeout)
        r.raise_for_status()
        return r.json()

    def describe(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        url = f"{self.settings.url('management')}/models/{self.model}"
        r = self.http.get(url, headers=self.auth("management"), timeout=timeout)
        r.raise_for_status()
        return r.json()

    def metrics(self, timeout: float = 5.0) -> str:
        r = self.http.get(self.settings.url("metrics") + "/metrics", headers=self.auth("management"), timeout=timeout)
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
            headers = {**self.auth(), "Content-Type": content_type}
            headers |= {f"X-Vsyn-{k.replace('_', '-').title()}": v for k, v in params.items()}
            return self.http.post(url, data=image, headers=headers, timeout=timeout)
        files = {"image": ("image", image, content_type), "mask": ("mask", mask, content_type)}
        return self.http.post(url, data=params, files=files, headers=self.auth(), timeout=timeout)
