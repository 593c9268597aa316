"""Shared plumbing for the metrics: weight files, value conversions, resizing, feature statistics, ranks.

Every detector weight file comes from a path the user gives (argument or environment variable) and is checked by
sha256 before it is used; nothing is ever downloaded (method.md §3.3 pitfall 10: hosted weights vanish, and a
silently different file silently changes every number).
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vsyn.errors import VsynError

RESIZE_MODES = ("direct", "short_side_crop", "none")


# ----------------------------------------------------------------------------------------------------------------
# Weight files


@dataclass(frozen=True)
class WeightsSpec:
    """What a detector needs from the user: the published file name, where it is published, its hash if known."""

    what: str  # human name, e.g. "I3D (VideoGPT/TATS port, Kinetics-400)"
    filename: str  # the published file name, e.g. "i3d_pretrained_400.pt"
    env: str  # environment variable holding the path
    source: str  # where the user can get it (we never fetch it)
    sha256: str | None = None  # full hex digest or a published prefix (torch-hub style); None = unknown
    flag: str = ""  # the `vsyn eval` option that takes the path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(spec: WeightsSpec, path: str | Path | None = None, expected_sha256: str | None = None) -> tuple[Path, str]:
    """Find the weight file (argument, else `spec.env`), check its sha256, return (path, full sha256).

    `expected_sha256` overrides `spec.sha256` (full digest or prefix). When neither is known the file is accepted
    and its digest is returned so that it lands in the protocol card.
    """
    raw = path if path not in (None, "") else os.environ.get(spec.env, "")
    if not raw:
        raise VsynError(
            f"{spec.what}: weights file '{spec.filename}' not given. Pass its path"
            f"{f' ({spec.flag} PATH)' if spec.flag else ''} or set {spec.env}=/path/to/{spec.filename}; it is never "
            f"downloaded. Published at: {spec.source}"
        )
    resolved = Path(raw).expanduser()
    if resolved.is_dir():
        resolved = resolved / spec.filename
    if not resolved.is_file():
        raise VsynError(
            f"{spec.what}: weights file '{resolved}' does not exist (expected the published '{spec.filename}', "
            f"from {spec.source})"
        )
    digest = sha256_file(resolved)
    expected = (expected_sha256 or spec.sha256 or "").lower().strip()
    if expected and not digest.startswith(expected):
        raise VsynError(
            f"{spec.what}: '{resolved}' has sha256 {digest}, expected {expected}{'...' if len(expected) < 64 else ''} "
            f"(the published '{spec.filename}'). A different file gives numbers that are not comparable; pass "
            f"--detector-sha256 {digest} only if you mean to use this file."
        )
    return resolved, digest


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain tensor state dict (`torch.save` or safetensors), weights only."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VsynError(f"'{path}' does not hold a state dict (got {type(state).__name__})")
    return state


def load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that tolerates only a missing BatchNorm `num_batches_tracked` (converted TF files lack it)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise VsynError(
            f"'{source}' does not match {type(module).__name__}: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)}), shape mismatches {wrong[:3]} ({len(wrong)})"
        )
    full = {k: state.get(k, own[k]) for k in own}
    module.load_state_dict(full, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# Values and resizing


def to_uint8_values(video: torch.Tensor) -> torch.Tensor:
    """float [0,1] -> float holding integers 0..255 (round half up), or uint8 -> float.

    Generated videos are quantised exactly like the real ones are on disk, so real and fake reach the detector
    through the same path (StyleGAN-V quantises its fakes too).
    """
    if video.dtype == torch.uint8:
        return video.float()
    return torch.floor(video.float().clamp(0, 1) * 255 + 0.5)


def resize_frames(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) frames to `size` x `size` with bilinear interpolation (align_corners=False, no antialias).

    direct: stretch to size x size (TF FVD, TATS, cd-fvd); short_side_crop: shorter side to `size` (width or height
    rounded up), then centre crop (VideoGPT/DIGAN `preprocess_single`); none: leave as is.
    """
    if mode == "none":
        return x
    h, w = x.shape[-2:]
    if mode == "direct":
        if (h, w) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if mode == "short_side_crop":
        scale = size / min(h, w)
        target = (size, int(np.ceil(w * scale))) if h < w else (int(np.ceil(h * scale)), size)
        if target != (h, w):
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        th, tw = x.shape[-2:]
        top, left = (th - size) // 2, (tw - size) // 2
        return x[..., top:top + size, left:left + size]
    raise VsynError(f"resize must be one of {RESIZE_MODES}, not {mode!r}")


# ----------------------------------------------------------------------------------------------------------------
# Feature statistics


def feature_stats(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64. ddof=1 (N-1, np.cov, VideoGPT/TATS, pytorch-fid); ddof=0 is StyleGAN-V's."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise VsynError(f"need at least 2 feature rows to estimate a covariance, got shape {x.shape}")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - ddof)
    return mu, sigma


# ----------------------------------------------------------------------------------------------------------------
# Ranks


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def local_share(n: int) -> int:
    """How many of `n` items this rank handles (the first n % world ranks take one more)."""
    rank, world = rank_world()
    return n // world + (1 if rank < n % world else 0)


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (n_r, ...) tensors from all ranks in rank order; rows may differ per rank. No-op on one process."""
    rank, world = rank_world()
    if world == 1:
        return x
    device = x.device
    if torch.distributed.get_backend() == "nccl" and device.type != "cuda":
        x = x.cuda()
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    torch.distributed.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(device)


# ----------------------------------------------------------------------------------------------------------------
# Provenance


def library_versions() -> dict[str, str]:
    import scipy

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "scipy": scipy.__version__}
    try:
        from importlib.metadata import version

        versions["vsyn"] = version("vsyn")
    except Exception:  # running from a source tree without metadata
        versions["vsyn"] = "unknown"
    if torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
    return versions


class exact_matmul:
    """Context: turn TF32 off for convs and matmuls (on by default for cuDNN convs), so fp32 detectors are fp32."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __enter__(self) -> "exact_matmul":
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = not self.enabled
        torch.backends.cudnn.allow_tf32 = not self.enabled
        return self

    def __exit__(self, *exc: object) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved


# ----------------------------------------------------------------------------------------------------------------
# Generators as clip functions

VideoFn = Callable[[torch.Tensor, int], torch.Tensor]  # (images (B,3,H,W) [0,1], num_frames) -> (B,T,3,H,W) [0,1]


def video_fn(generator: object, *, seed: int = 0, device: str | torch.device = "cpu") -> VideoFn:
    """Turn a vsyn generator (nn.Module with `sample_noise`) or any callable `(images, num_frames) -> video` into
    a callable with that signature. Module noise is drawn from a torch.Generator seeded with `seed` (+ rank), so an
    evaluation is reproducible."""
    if isinstance(generator, torch.nn.Module):
        module = generator.eval()
        rng = torch.Generator(device="cpu").manual_seed(seed + 1_000_003 * rank_world()[0])

        @torch.no_grad()
        def run(images: torch.Tensor, num_frames: int) -> torch.Tensor:
            noise = None
            if hasattr(module, "sample_noise"):
                noise = module.sample_noise(images.shape[0], generator=rng)
                noise = noise.to(device) if noise is not None else None
            return module(images.to(device), num_frames=num_frames, noise=noise)

        return run
    if not callable(generator):
        raise VsynError(f"expected a generator module or a callable, got {type(generator).__name__}")
    return generator


def copy_first_frame(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The trivial reference generator: every frame is the input (zero motion, zero leakage)."""
    return images.unsqueeze(1).expand(-1, num_frames, -1, -1, -1).clone()


class MomentAccumulator:
    """Running float64 sums (n, sum x, sum x x^T) of feature rows: the covariance of 2048 x 16 frames x 2048-d
    features without holding the features. Merged over ranks with an all-reduce (StyleGAN-V does the same)."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.s = torch.zeros(dim, dtype=torch.float64)
        self.q = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(feats, dtype=torch.float64).cpu()
        self.n += x.shape[0]
        self.s += x.sum(dim=0)
        self.q += x.T @ x

    def all_reduce(self) -> None:
        rank, world = rank_world()
        if world == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
            else torch.device("cpu")
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=device)
        s, q = self.s.to(device), self.q.to(device)
        for t in (n, s, q):
            torch.distributed.all_reduce(t)
        self.n, self.s, self.q = int(n.item()), s.cpu(), q.cpu()

    def finalize(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise VsynError(f"need at least 2 feature rows to estimate a covariance, got {self.n}")
        mu = self.s / self.n
        sigma = (self.q - self.n * torch.outer(mu, mu)) / (self.n - ddof)
        return mu.numpy(), ((sigma + sigma.T) / 2).numpy()


def all_ranks_true(flag: bool) -> bool:
    """True only if `flag` holds on every rank (collective decisions, e.g. 'use the cache', must agree)."""
    rank, world = rank_world()
    if world == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")
    t = torch.tensor([1 if flag else 0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())
