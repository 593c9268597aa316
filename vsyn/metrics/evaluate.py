"""One pass over real clips that computes every requested metric for a generator.

Each real clip's frame 0 conditions the generator; generated clips are rounded to 8-bit (what users get) and
compared with the real clip they came from (PSNR/SSIM/LPIPS/motion) and, as distributions, through detector
features (FVD/FID). Real-data feature statistics are cached on disk keyed by (dataset manifest, protocol,
detector sha256), so a snapshot evaluation only pays for the generated side after the first time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from vsyn.errors import VsynError
from vsyn.metrics.fid import frame_features, load_image_detector
from vsyn.metrics.frechet import frechet_distance
from vsyn.metrics.fvd import load_video_detector, video_features
from vsyn.metrics.protocol import Protocol, ProtocolCard, data_digest, load_stats, save_stats, standard_protocol, stats_path
from vsyn.metrics.psnr import psnr_frames
from vsyn.metrics.ssim import ssim_frames
from vsyn.metrics.utils import (MomentAccumulator, all_gather_rows, all_ranks_true, local_share, rank_world, to_uint8_values,
                                video_fn)

log = logging.getLogger(__name__)

FEATURE_METRICS = ("fvd16", "fvd128", "fid")
PAIRED_METRICS = ("psnr", "ssim", "lpips")
ALL_METRICS = FEATURE_METRICS + PAIRED_METRICS + ("motion",)


@dataclass(frozen=True)
class MetricInfo:
    lower_is_better: bool
    unit: str
    doc: str


# Every scalar a run can report, with its direction: best-checkpoint selection minimises `selection_score`.
METRICS: dict[str, MetricInfo] = {
    "fvd16": MetricInfo(True, "", "FVD, 16 generated frames (1..16), I3D logits"),
    "fvd128": MetricInfo(True, "", "FVD, 128 generated frames (1..128), I3D logits"),
    "fid": MetricInfo(True, "", "FID over generated frames 1..16 (frame 0 excluded), Inception pool3"),
    "psnr": MetricInfo(False, "dB", "PSNR of generated frames 1..T-1 vs the true frames"),
    "ssim": MetricInfo(False, "", "SSIM (11x11 Gaussian, sigma 1.5) of frames 1..T-1 vs the true frames"),
    "lpips": MetricInfo(True, "", "LPIPS v0.1 AlexNet of frames 1..T-1 vs the true frames"),
    "motion_epe": MetricInfo(True, "px/frame", "flow endpoint error over the moving region (procedural data)"),
    "motion_speed_ratio": MetricInfo(False, "", "estimated / true speed over the moving region; 1 is right"),
    "motion_leak": MetricInfo(True, "8-bit levels", "mean |x_t - x_{t-1}| over the static region"),
    "motion_drift": MetricInfo(True, "8-bit levels", "mean |x_t - x_0| over the static region"),
    "motion_psnr": MetricInfo(False, "dB", "PSNR vs the true frames on procedural data"),
}
_SELECT_ALIAS = {"motion": "motion_epe"}


def selection_score(name: str, value: float) -> float:
    """Lower is better for every metric after this: value, or -value for higher-is-better metrics."""
    name = _SELECT_ALIAS.get(name, name)
    if name not in METRICS:
        raise VsynError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    return value if METRICS[name].lower_is_better else -value


def parse_metrics(names: str | Iterable[str]) -> list[str]:
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    bad = [n for n in items if n not in ALL_METRICS]
    if bad:
        raise VsynError(f"unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}")
    if not items:
        raise VsynError("no metrics requested")
    return list(dict.fromkeys(items))


def default_cache_dir() -> Path:
    return Path(os.environ.get("VSYN_STATS_CACHE", Path.home() / ".cache" / "vsyn" / "stats"))


@dataclass
class EvalSettings:
    n: int = 2048
    device: str = "cpu"
    batch: int = 16  # clips per detector call
    seed: int = 0
    bf16: bool = False  # detectors in bf16: faster, NOT comparable (see fvd.py); recorded in the card
    cache_dir: str | None = None  # real-statistics cache; default $VSYN_STATS_CACHE or ~/.cache/vsyn/stats
    weights: dict[str, str] = field(default_factory=dict)  # detector name -> path (else the env variables)
    sha256: dict[str, str] = field(default_factory=dict)  # detector name -> expected sha256 override
    protocol_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"resize": "short_side_crop"}
    detectors: dict[str, torch.nn.Module] = field(default_factory=dict)  # preloaded (tests: random init)
    detector_sha256: dict[str, str] = field(default_factory=dict)  # digests of preloaded detectors
    split: str = ""
    # True: every rank reads the same clip stream (make_loader(..., rank=0, world_size=1)) and keeps clips
    # i % world == rank among the first n, so the evaluated set is the first n clips whatever the world size (and
    # cached real statistics stay valid). False: each rank's loader already holds its own shards.
    shared_stream: bool = False


def build_protocols(names: list[str], settings: EvalSettings) -> dict[str, Protocol]:
    protos = {}
    for name in names:
        if name in FEATURE_METRICS:
            over = dict(settings.protocol_overrides)
            if name == "fid":
                over = {k: v for k, v in over.items() if k in ("frames", "stride", "start", "quantize", "cov_ddof")}
            protos[name] = standard_protocol(name, n=settings.n, seed=settings.seed, split=settings.split, **over)
    return protos


def required_frames(names: list[str], protocols: dict[str, Protocol], minimum: int = 2) -> int:
    """Clip length the loader must deliver (input frame included)."""
    return max([minimum] + [p.clip_length for p in protocols.values()])


def _detector(protocol: Protocol, settings: EvalSettings) -> tuple[torch.nn.Module, str]:
    if protocol.detector in settings.detectors:
        return settings.detectors[protocol.detector], settings.detector_sha256.get(protocol.detector, "unverified")
    load = load_image_detector if protocol.detector == "inception-fid" else load_video_detector
    model, digest = load(protocol, settings.weights.get(protocol.detector), settings.sha256.get(protocol.detector),
                         settings.device)
    settings.detectors[protocol.detector], settings.detector_sha256[protocol.detector] = model, digest
    return model, digest


def evaluate(generator: object, loader: Iterable[dict], names: list[str], data_url: str, settings: EvalSettings,
             checkpoint: str = "") -> tuple[dict[str, float], dict[str, ProtocolCard]]:
    """Compute `names` for `generator` over `settings.n` clips of `loader` (uint8 `video`, and `flow`/`mask` for
    motion). Returns (values, protocol cards per feature metric). Distributed: with `settings.shared_stream` every
    rank reads the same stream and keeps clips i % world == rank of the first n; otherwise each rank's loader holds
    its own shards and it takes its share of n. Moments are all-reduced and rows all-gathered, so every rank returns
    the same values."""
    names = parse_metrics(names)
    protocols = build_protocols(names, settings)
    need = required_frames(names, protocols)
    device = torch.device(settings.device)
    fn = video_fn(generator, seed=settings.seed, device=device)
    digest = data_digest(data_url)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()

    feats: dict[str, dict[str, Any]] = {}
    for name, proto in protocols.items():
        det, det_sha = _detector(proto, settings)
        path = stats_path(cache_dir, digest, proto, det_sha)
        cached = load_stats(path) if det_sha != "unverified" else None
        if not all_ranks_true(cached is not None):  # every rank must take the same path (collectives below)
            cached = None
        dim = getattr(det, "feature_dim", 400)
        feats[name] = {"proto": proto, "det": det, "sha": det_sha, "path": path, "cached": cached,
                       "real": None if cached else MomentAccumulator(dim), "fake": MomentAccumulator(dim)}
        if cached:
            log.info("%s: real statistics from cache %s", name, path)
    lpips_model = None
    if "lpips" in names:
        if "lpips" in settings.detectors:
            lpips_model = settings.detectors["lpips"]
        else:
            from vsyn.metrics.lpips import load_lpips

            lpips_model, settings.detector_sha256["lpips"] = load_lpips(
                settings.weights.get("lpips"), settings.weights.get("alexnet"), settings.sha256.get("lpips"))
            lpips_model = lpips_model.to(device)
            settings.detectors["lpips"] = lpips_model

    rank, world = rank_world()
    want = settings.n if settings.shared_stream else local_share(settings.n)
    rows: list[torch.Tensor] = []  # per clip: psnr, ssim, lpips (means over frames 1..T-1)
    motion_rows: list[torch.Tensor] = []
    seen = 0  # clips consumed from this rank's stream
    mine = 0  # clips evaluated by this rank
    for batch in loader:
        video = torch.as_tensor(batch["video"])
        take = torch.arange(seen, seen + video.shape[0])
        keep = take < want
        if settings.shared_stream:
            keep &= take % world == rank
        seen += video.shape[0]
        real = video[keep]
        b = real.shape[0]
        if b == 0:
            if seen >= want:
                break
            continue
        t = real.shape[1]
        if t < need:
            raise VsynError(f"clips have {t} frames but the requested metrics need {need} (frame 0 + generated)")
        real = real[:, :need].to(device)
        # Generated clips become uint8 once, like real ones on disk: every metric then sees exactly what a user gets,
        # and every later /255 happens in float64.
        fake = to_uint8_values(fn(real[:, 0].float() / 255, need)).to(device=device, dtype=torch.uint8)
        if fake.shape != real.shape:
            raise VsynError(f"generator returned {tuple(fake.shape)} for real clips {tuple(real.shape)}")
        for f in feats.values():
            proto, det = f["proto"], f["det"]
            extract = frame_features if proto.detector == "inception-fid" else video_features
            f["fake"].update(extract(det, fake, proto, batch=settings.batch, bf16=settings.bf16))
            if f["real"] is not None:
                f["real"].update(extract(det, real, proto, batch=settings.batch, bf16=settings.bf16))
        if any(n in names for n in PAIRED_METRICS):
            cols = []
            cols.append(psnr_frames(fake[:, 1:], real[:, 1:]).mean(dim=1) if "psnr" in names else torch.zeros(b))
            cols.append(ssim_frames(fake[:, 1:], real[:, 1:]).mean(dim=1) if "ssim" in names else torch.zeros(b))
            if lpips_model is not None:
                with torch.no_grad():
                    d = lpips_model(fake[:, 1:].reshape(-1, *fake.shape[2:]).float() / 255,
                                    real[:, 1:].reshape(-1, *real.shape[2:]).float() / 255)
                cols.append(d.reshape(b, -1).double().mean(dim=1))
            else:
                cols.append(torch.zeros(b))
            rows.append(torch.stack([c.double().cpu() for c in cols], dim=1))
        if "motion" in names:
            from vsyn.metrics.motion import _clip_rows

            if "flow" not in batch or "mask" not in batch:
                raise VsynError("metric 'motion' needs procedural shards (samples with flow.npy and mask.npy)")
            flow = torch.as_tensor(batch["flow"])[keep][:, : need - 1].to(device)
            mask = torch.as_tensor(batch["mask"])[keep].to(device)
            motion_rows.append(_clip_rows(fake, real, flow, mask, border=4, floor=False))
        mine += b
        if seen >= want:
            break

    total = int(all_gather_rows(torch.tensor([[mine]], device=device)).sum())
    if total < settings.n:
        raise VsynError(f"the data gave only {total} clips of at least {need} frames; the protocol asks for "
                        f"n={settings.n} (lower --n, or point --data at more clips)")

    values: dict[str, float] = {}
    cards: dict[str, ProtocolCard] = {}
    for name, f in feats.items():
        proto = f["proto"]
        f["fake"].all_reduce()
        mu_g, sig_g = f["fake"].finalize(proto.cov_ddof)
        if f["cached"]:
            mu_r, sig_r, _ = f["cached"]
        else:
            f["real"].all_reduce()
            mu_r, sig_r = f["real"].finalize(proto.cov_ddof)
        fd = frechet_distance(mu_r, sig_r, mu_g, sig_g)
        values[name] = fd.value
        card = ProtocolCard(protocol=proto, detector_sha256=f["sha"], data=data_url, data_digest=digest,
                            checkpoint=checkpoint,
                            result={"value": fd.value, "value_eig": fd.value_eig, "mean_term": fd.mean_term,
                                    "trace_term": fd.trace_term, "sqrtm_offset": fd.offset,
                                    "sqrtm_max_imag": fd.max_imag, "n_generated_rows": f["fake"].n,
                                    "bf16": settings.bf16, "real_stats": str(f["path"])})
        cards[name] = card
        if not f["cached"] and f["sha"] != "unverified" and rank == 0 and not settings.bf16:
            save_stats(f["path"], mu_r, sig_r, f["real"].n, card)
    # Collectives on every rank, also one that got no clips (decided by the metric names, never by local data).
    if any(n in names for n in PAIRED_METRICS):
        local = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.float64)
        r = all_gather_rows(local.to(device)).cpu()
        for i, name in enumerate(PAIRED_METRICS):
            if name in names:
                values[name] = float(r[:, i].mean())
    if "motion" in names:
        local = torch.cat(motion_rows) if motion_rows else torch.zeros(0, 8 + need - 1, dtype=torch.float64)
        m = all_gather_rows(local.to(device)).cpu().double()
        s = m.sum(dim=0)
        values["motion_epe"] = float(s[0] / s[3].clamp_min(1))
        values["motion_speed_ratio"] = float(s[1] / s[2].clamp_min(1e-12))
        values["motion_leak"] = float(s[4] / s[6].clamp_min(1))
        values["motion_drift"] = float(s[5] / s[6].clamp_min(1))
        values["motion_psnr"] = float(m[:, 8:].mean())
    return values, cards
