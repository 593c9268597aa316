"""Evaluation protocols made explicit: what clips, how many, how resized, which detector -- and a card that says so.

FVD/FID numbers in the literature differ by 2-5x for the same model depending on split, N, frame count, stride,
resize path and detector (method.md §3.3). A `Protocol` pins every one of these; a `ProtocolCard` (JSON) is written
beside every result; cached real-data statistics are keyed by (dataset manifest, protocol, detector hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vsyn.errors import VsynError
from vsyn.metrics.utils import RESIZE_MODES, library_versions

DETECTORS = ("i3d-videogpt", "i3d-stylegan-v", "inception-fid")
_DETECTOR_RANGES = {"i3d-videogpt": "[-1,1]", "i3d-stylegan-v": "[0,255]", "inception-fid": "[0,1]"}


@dataclass(frozen=True)
class Protocol:
    """One feature-distance protocol. Frame indices used: start, start+stride, ..., start+(frames-1)*stride.

    start=1 skips frame 0, which is the conditioning input copied verbatim (method.md §7: FID/IS that include it
    are inflated); real clips are cut at the same indices, so both sides show the same moments of a clip.
    """

    name: str  # fvd16 | fvd128 | fid
    detector: str = "i3d-videogpt"  # i3d-videogpt | i3d-stylegan-v | inception-fid
    n: int = 2048  # clips (FID uses all `frames` frames of each of the n clips)
    frames: int = 16
    stride: int = 1
    start: int = 1
    resize: str = "direct"  # direct (224x224 stretch) | short_side_crop | none (detector resizes itself)
    size: int = 224  # detector input side (299 for the Inception: it resizes internally)
    value_range: str = "[-1,1]"  # what the detector receives (fixed by the detector; recorded for the card)
    quantize: bool = True  # round generated frames to uint8 values, as the real ones are
    cov_ddof: int = 1  # 1: unbiased (N-1; np.cov, VideoGPT/TATS, pytorch-fid); 0: StyleGAN-V
    split: str = ""  # which real data (e.g. "sky-test"); for the card
    seed: int = 0  # generator noise seed base

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise VsynError(f"protocol {self.name}: detector must be one of {DETECTORS}, not {self.detector!r}")
        if self.resize not in RESIZE_MODES:
            raise VsynError(f"protocol {self.name}: resize must be one of {RESIZE_MODES}, not {self.resize!r}")
        if self.value_range != _DETECTOR_RANGES[self.detector]:
            raise VsynError(f"protocol {self.name}: detector {self.detector} takes {_DETECTOR_RANGES[self.detector]}, "
                            f"not {self.value_range}")
        if self.detector == "i3d-stylegan-v" and self.resize != "none":
            raise VsynError("protocol: the StyleGAN-V TorchScript resizes inside (resize=True); use resize='none'")
        if self.n < 2 or self.frames < 1 or self.stride < 1 or self.start < 0:
            raise VsynError(f"protocol {self.name}: need n >= 2, frames >= 1, stride >= 1, start >= 0")
        if self.detector.startswith("i3d") and self.frames < 10:
            raise VsynError(f"protocol {self.name}: I3D needs at least 10 frames, got {self.frames}")

    @property
    def indices(self) -> list[int]:
        return [self.start + i * self.stride for i in range(self.frames)]

    @property
    def clip_length(self) -> int:
        """Frames a clip must have (input frame included) for this protocol."""
        return self.indices[-1] + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def standard_protocol(name: str, **overrides: Any) -> Protocol:
    """vsyn's image-conditioned defaults: fvd16, fvd128 (I3D, VideoGPT/TATS port, 224 stretch) and fid."""
    base: dict[str, Any]
    if name == "fvd16":
        base = dict(frames=16)
    elif name == "fvd128":
        base = dict(frames=128)
    elif name == "fid":
        base = dict(detector="inception-fid", frames=16, resize="none", size=299, value_range="[0,1]")
    else:
        raise VsynError(f"no standard protocol named {name!r} (fvd16, fvd128, fid)")
    if overrides.get("detector") == "i3d-stylegan-v":
        base.update(resize="none", value_range="[0,255]")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Protocol(name=name, **base)


@dataclass
class ProtocolCard:
    """Everything needed to reproduce or compare one number; written as JSON beside every result."""

    protocol: Protocol
    detector_sha256: str
    data: str  # dataset URL or manifest
    data_digest: str  # sha256 of the manifest (or of the URL string when no manifest is readable)
    checkpoint: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["protocol"] = self.protocol.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProtocolCard":
        d = dict(d)
        d["protocol"] = Protocol(**d["protocol"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ProtocolCard":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path


def _read_manifest(part: str) -> bytes | None:
    """Bytes of the manifest.json that describes `part` (itself, the folder/prefix it names, or the folder of a
    local shard pattern); local, http(s) or s3 through vsyn.data's readers. None when there is none to read."""
    base = part.split("#", 1)[0]
    if base.endswith("manifest.json"):
        location = base
    elif base.endswith("/") or ("://" not in base and Path(base).is_dir()):
        location = base.rstrip("/") + "/manifest.json"
    elif "://" not in base:
        location = str(Path(base.split("{")[0]).parent / "manifest.json")
    else:
        location = base.rsplit("/", 1)[0] + "/manifest.json"
    try:
        if "://" not in location:
            return Path(location).read_bytes() if Path(location).is_file() else None
        from vsyn.data.streams import read_bytes

        return read_bytes(location)
    except Exception:  # no manifest there: fall back to the URL itself
        return None


def data_digest(url: str) -> str:
    """Identify the real data: sha256 over, per `::`-part, the manifest's bytes (it holds every shard's sha256) plus
    the part's last path component (a shard subset or `#split`), or the whole part when no manifest is readable."""
    digest = hashlib.sha256()
    for part in url.split("::"):
        manifest = _read_manifest(part)
        if manifest is None:
            digest.update(b"url:" + part.encode())
        else:
            digest.update(b"manifest:" + hashlib.sha256(manifest).digest())
            tail = part.rstrip("/").rsplit("/", 1)[-1]
            digest.update(b"" if tail == "manifest.json" or Path(part).is_dir() else tail.encode())
    return digest.hexdigest()


def stats_key(digest: str, protocol: Protocol, detector_sha256: str) -> str:
    payload = json.dumps({"data": digest, "protocol": protocol.to_dict(), "detector": detector_sha256}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def stats_path(cache_dir: str | Path, digest: str, protocol: Protocol, detector_sha256: str) -> Path:
    return Path(cache_dir) / f"{protocol.name}-{stats_key(digest, protocol, detector_sha256)}.npz"


def save_stats(path: Path, mu: np.ndarray, sigma: np.ndarray, n: int, card: ProtocolCard) -> None:
    """Write atomically (temp + rename) so a crashed run never leaves a half file that a later run trusts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, mu=mu.astype(np.float64), sigma=sigma.astype(np.float64), n=np.int64(n),
             card=np.array(card.to_json()))
    tmp.replace(path)


def load_stats(path: Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        return z["mu"], z["sigma"], int(z["n"])
