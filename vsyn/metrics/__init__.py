"""vsyn's metrics: FVD/FID with the published detectors, PSNR/SSIM/LPIPS, and a ground-truth motion benchmark.

One file per metric (`fvd`, `fid`, `psnr`, `ssim`, `lpips`, `motion`), the detectors (`i3d`, `inception`), the
Fréchet distance (`frechet`), explicit protocols and cards (`protocol`), the one-pass runner (`evaluate`) and shared
plumbing (`utils`). Direction of every scalar: `METRICS[name].lower_is_better`; `selection_score` maps any metric to
lower-is-better for best-checkpoint selection.

Weights (never downloaded), by environment variable or `vsyn eval --*-weights`:
  VSYN_I3D_PATH (i3d_pretrained_400.pt), VSYN_I3D_TORCHSCRIPT_PATH (i3d_torchscript.pt),
  VSYN_INCEPTION_PATH (pt_inception-2015-12-05-6726825d.pth), VSYN_LPIPS_PATH (alex.pth v0.1) +
  VSYN_ALEXNET_PATH (alexnet-owt-7be5be79.pth). Real statistics cache: VSYN_STATS_CACHE.
"""

from __future__ import annotations

from typing import Any

from vsyn.metrics.evaluate import (ALL_METRICS, METRICS, EvalSettings, build_protocols, clip_frames, evaluate,
                                   parse_metrics, required_frames, selection_score)
from vsyn.metrics.frechet import FrechetError, frechet_distance
from vsyn.metrics.protocol import Protocol, ProtocolCard, standard_protocol

__all__ = ["ALL_METRICS", "METRICS", "EvalSettings", "FrechetError", "Protocol", "ProtocolCard", "eval_data", "evaluate",
           "frechet_distance", "make_eval_loader", "run_snapshot_metrics", "selection_score", "standard_protocol"]


def eval_data(data_url: str) -> str:
    """`data_url` with its held-out split named: `DIR` or `DIR/manifest.json` reads the val split (else test); an
    explicit `#split` wins. Name the result in cards and caches: it says which clips were scored."""
    from vsyn.data import EVAL_SPLITS, pin_split

    return pin_split(data_url, EVAL_SPLITS)


def make_eval_loader(data_url: str, frames: int, batch_size: int, **kwargs: Any):
    """The shard reader in eval mode (fixed order, no augmentation) over the held-out split (`eval_data`), as one
    shared stream: every rank reads the same clips and `evaluate(shared_stream=True)` deals them, so the evaluated
    set does not depend on the world size."""
    from vsyn.data import EVAL_SPLITS, make_loader

    return make_loader(data_url, frames=frames, batch_size=batch_size, mode="eval", rank=0, world_size=1,
                       splits=EVAL_SPLITS, **kwargs)


def run_snapshot_metrics(generator: Any, cfg: Any, names: list[str], data_url: str, n: int,
                         settings: EvalSettings | None = None, loader: Any = None) -> dict[str, float]:
    """What the trainer calls at a snapshot: `names` over the first `n` clips of `data_url`'s held-out split (the
    same clips and the same noise at every snapshot), as {metric: value}.

    Keys: fvd16, fvd128, fid, psnr, ssim, lpips as named; 'motion' expands to `vsyn.metrics.motion.KEYS`
    (motion_leak, motion_speed_ratio, motion_dir_cos_bestk, motion_score, ...). Clips of T = cfg.model.frames
    frames for the paired and motion metrics. Direction per key in `METRICS`; pick the best snapshot by the smallest
    `selection_score(name, value)`. Detector weights come from the environment variables (see module doc).
    Call it on every rank when distributed: each rank evaluates its share and all get the same values.
    """
    import torch

    names = parse_metrics(names)
    if settings is None:
        device = next(iter(generator.parameters())).device if isinstance(generator, torch.nn.Module) else "cpu"
        settings = EvalSettings(n=n, device=str(device), seed=int(getattr(getattr(cfg, "train", None), "seed", 0)))
    settings.n = n
    model = getattr(cfg, "model", None)
    if settings.frames is None and getattr(model, "frames", None):
        settings.frames = int(model.frames)
    if loader is None:
        data_url = eval_data(data_url)
        need = required_frames(names, build_protocols(names, settings), clip_frames(generator, settings))
        data = getattr(cfg, "data", None)
        loader = make_eval_loader(data_url, frames=need, batch_size=settings.batch,
                                  size=getattr(getattr(cfg, "model", None), "resolution", None),
                                  stride=getattr(data, "stride", 1), workers=getattr(data, "workers", 2))
        settings.shared_stream = True
    was_training = isinstance(generator, torch.nn.Module) and generator.training
    try:
        values, _ = evaluate(generator, loader, names, data_url, settings)
    finally:
        if was_training:
            generator.train()
    return values
