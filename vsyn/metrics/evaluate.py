"""One pass over real clips that computes every requested metric for a generator.

Each real clip's frame 0 conditions the generator; generated clips are rounded to 8-bit (what users get) and
compared with the real clip they came from (PSNR/SSIM/LPIPS/motion, over frames 1..T-1 with T = `EvalSettings.frames`,
default the generator's training length, whatever else is asked) and, as distributions, through detector features
(FVD/FID, over their protocol's frames). Real-data feature statistics are cached on disk keyed by (dataset manifest,
protocol, detector sha256), so a snapshot evaluation only pays for the generated side after the first time.
"""

from __future__ import annotations

import logging
import math
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
from vsyn.metrics.utils import MomentAccumulator, all_gather_rows, all_ranks_true, local_share, rank_world, video_fn

log = logging.getLogger(__name__)

FEATURE_METRICS = ("fvd16", "fvd128", "fid")
PAIRED_METRICS = ("psnr", "ssim", "lpips")
ALL_METRICS = FEATURE_METRICS + PAIRED_METRICS + ("motion",)


BETTER = ("lower", "higher", "closer to 1", "reference", "diagnostic")


@dataclass(frozen=True)
class MetricInfo:
    better: str  # one of BETTER; "reference": a property of the data (the estimator's floor), not of the model;
    # "diagnostic": a property of the model with no right value (how differently its futures move)
    unit: str
    doc: str

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"


# Every scalar a run can report, with its direction: best-checkpoint selection minimises `selection_score`.
METRICS: dict[str, MetricInfo] = {
    "fvd16": MetricInfo("lower", "", "FVD, 16 generated frames (1..16), I3D logits"),
    "fvd128": MetricInfo("lower", "", "FVD, 128 generated frames (1..128), I3D logits"),
    "fid": MetricInfo("lower", "", "FID over generated frames 1..16 (frame 0 excluded), Inception pool3"),
    "psnr": MetricInfo("higher", "dB", "PSNR of generated frames 1..T-1 vs the true frames"),
    "ssim": MetricInfo("higher", "", "SSIM (11x11 Gaussian, sigma 1.5) of frames 1..T-1 vs the true frames"),
    "lpips": MetricInfo("lower", "", "LPIPS v0.1 AlexNet of frames 1..T-1 vs the true frames"),
    "motion_leak": MetricInfo("lower", "share", "static pixels x frames changed > 12/255 from frame 0"),
    "motion_static_change": MetricInfo("lower", "8-bit levels", "mean |x_t - x_0| over the static region"),
    "motion_speed_ratio": MetricInfo("closer to 1", "", "estimated speed, generated / true clip (same estimator)"),
    "motion_epe": MetricInfo("lower", "px/frame", "flow endpoint error vs the true flow, moving region"),
    "motion_epe_bestk": MetricInfo("lower", "px/frame", "endpoint error of the best of K samples per clip"),
    "motion_dir_cos": MetricInfo("higher", "", "cosine of estimated and true flow fields (1 same, 0 none)"),
    "motion_dir_cos_bestk": MetricInfo("higher", "", "field cosine of the best of K samples per clip"),
    "motion_dir_cos_pixel": MetricInfo("higher", "", "mean per-pixel cosine of estimated and true flow"),
    "motion_warp_error": MetricInfo("lower", "8-bit levels", "|x_t - x_{t+1} warped by its own estimated flow|"),
    "motion_psnr_moving": MetricInfo("higher", "dB", "PSNR vs the true frames over the moving region"),
    "motion_frame0_psnr": MetricInfo("higher", "dB", "frame 0 vs the input (100 = copied exactly)"),
    "motion_score": MetricInfo("lower", "", "leak + min(|log2 speed ratio|, 1) + (1 - dir cos best-of-K) / 2"),
    "motion_seed_spread": MetricInfo("diagnostic", "", "how differently the K futures move (0: noise does nothing)"),
    "motion_floor_epe": MetricInfo("reference", "px/frame", "the flow estimator's own EPE on the true clips"),
    "motion_floor_speed_ratio": MetricInfo("reference", "", "estimated / true speed on the true clips"),
    "motion_floor_warp_error": MetricInfo("reference", "8-bit levels", "warp error of the true clips"),
}
_SELECT_ALIAS = {"motion": "motion_score"}


def check_selectable(name: str) -> str:
    """The metric `name` (or its alias) if a checkpoint can be selected on it; VsynError otherwise."""
    name = _SELECT_ALIAS.get(name, name)
    if name not in METRICS:
        raise VsynError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    better = METRICS[name].better
    if better == "reference":
        raise VsynError(f"{name} describes the data, not the model: select on another metric")
    if better == "diagnostic":
        raise VsynError(f"{name} has no better direction: select on another metric")
    return name


def selection_score(name: str, value: float) -> float:
    """Lower is better for every metric after this: value, -value for higher-is-better metrics, |ln value| for
    ratios whose right value is 1."""
    better = METRICS[check_selectable(name)].better
    if better == "closer to 1":
        return abs(math.log(value)) if value > 0 else math.inf
    return value if better == "lower" else -value


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
    frames: int | None = None  # T for PSNR/SSIM/LPIPS/motion (input included); None: the generator's training length
    motion_samples: int = 8  # K samples per clip for the motion metrics of a stochastic generator
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


DEFAULT_FRAMES = 25  # T for a generator that does not say its training length (ModelConfig.frames' default)


def clip_frames(generator: object, settings: EvalSettings) -> int:
    """T for the paired and motion metrics: the setting, else the generator's training length."""
    t = settings.frames or getattr(generator, "frames", None) or DEFAULT_FRAMES
    if t < 2:
        raise VsynError(f"metrics need clips of at least 2 frames (the input and one generated), not {t}")
    return int(t)


def required_frames(names: list[str], protocols: dict[str, Protocol], frames: int) -> int:
    """Clip length the loader must deliver (input frame included): T for the paired and motion metrics, whatever
    other metrics are asked, and each feature protocol's length."""
    need = [p.clip_length for p in protocols.values()]
    if any(n in names for n in PAIRED_METRICS + ("motion",)):
        need.append(frames)
    return max(need or [frames])


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
    from vsyn.metrics import motion

    names = parse_metrics(names)
    protocols = build_protocols(names, settings)
    frames = clip_frames(generator, settings)
    need = required_frames(names, protocols, frames)
    device = torch.device(settings.device)
    reference = getattr(generator, "reads_real_clip", False)  # motion.TrueClip: the true clip is the "generated" one
    fn = None if reference else video_fn(generator, seed=settings.seed, device=device)
    k = settings.motion_samples if "motion" in names and motion.is_stochastic(generator) else 1
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
        # and every later /255 happens in float64. Sample 0 serves every metric, the others only motion's best-of-K.
        samples = [x.to(device) for x in motion.generate_samples(generator, fn, real, need, k)]
        fake = samples[0]
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
            gen, true = fake[:, 1:frames], real[:, 1:frames]
            cols.append(psnr_frames(gen, true).mean(dim=1) if "psnr" in names else torch.zeros(b))
            cols.append(ssim_frames(gen, true).mean(dim=1) if "ssim" in names else torch.zeros(b))
            if lpips_model is not None:
                with torch.no_grad():
                    d = lpips_model(gen.reshape(-1, *gen.shape[2:]).float() / 255,
                                    true.reshape(-1, *true.shape[2:]).float() / 255)
                cols.append(d.reshape(b, -1).double().mean(dim=1))
            else:
                cols.append(torch.zeros(b))
            rows.append(torch.stack([c.double().cpu() for c in cols], dim=1))
        if "motion" in names:
            if "flow" not in batch or "mask" not in batch:
                raise VsynError("metric 'motion' needs procedural shards (samples with flow.npy and mask.npy)")
            flow = torch.as_tensor(batch["flow"])[keep][:, : frames - 1]
            mask = torch.as_tensor(batch["mask"])[keep]
            motion_rows.append(motion.clip_rows([x[:, :frames] for x in samples], real[:, :frames], flow, mask))
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
        width = len(motion.COLUMNS) + frames - 1
        local = torch.cat(motion_rows) if motion_rows else torch.zeros(0, width, dtype=torch.float64)
        values.update(motion.summarize(all_gather_rows(local.to(device)).cpu().double()))
    return values, cards
