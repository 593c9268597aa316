"""Does a motion head use its latent noise? Read from the model's own fields, no flow estimator in between.

Direction is random per procedural clip (a still image cannot tell left from right), so a model that animates
well gives different futures for different latents and one of K of them points the right way: best-of-K direction
cosine well above the mean. A model that ignores its noise scores best-of-K = mean. Per checkpoint, on held-out
procedural scenes at the model's resolution and length:

- encoder RMS per pyramid level (coarsest first): the GRUs are seeded with these maps; large ones saturate the gates;
- field spread: RMS over pixels of the velocity's standard deviation over K latents, over the velocity's RMS
  (0: the latent changes nothing);
- seed spread: 1 - |sum_k m_k| / sum_k |m_k| with m_k the mean velocity of latent k over the truly moving pixels
  (the field counterpart of `motion_seed_spread` in vsyn/metrics/motion.py);
- field cosine with the true mean flow over the truly moving pixels (velocity zeroed where the model's moving mask
  is off), the mean over latents and the best of K;
- speed: mean |velocity| over the truly moving pixels where the model lets them move, over the true mean speed;
- mask IoU: the model's moving mask against the true moving region;
- field cos, encoded z (models trained with loss.reconstruction only): the same cosine with z the motion encoder's
  posterior mean for the true clip, i.e. whether the head reproduces a motion it is told (n/a without an encoder).

    python bench/latent_use.py bench/models/motion64 --n 64
    python bench/latent_use.py base=runs/a style=runs/b --n 128
    python bench/latent_use.py untrained=init:motion64      # a preset's network at its initial weights (seed 0)

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)

COLUMNS = ("encoder RMS (coarse to fine)", "field spread", "seed spread", "field cos", "field cos best-of-K",
           "speed / true", "mask IoU", "field cos, encoded z")


def _cosine(means: torch.Tensor, true_mean: torch.Tensor) -> torch.Tensor:
    """Cosine of each row of means (K, 2) with true_mean (2,); 0 for a zero vector."""
    return (means @ true_mean) / (means.norm(dim=1) * true_mean.norm()).clamp_min(1e-9)


@torch.no_grad()
def measure(generator: torch.nn.Module, n: int, k: int, seed: int) -> dict:
    """The columns above for one motion-head generator on `n` held-out procedural scenes."""
    from shards.procedural import generate_clips
    from vsyn.inference import sample_noise

    res, frames = generator.resolution, generator.frames
    noise = sample_noise(generator, list(range(k)), "cpu")
    enc_sq = None
    per_clip = {key: [] for key in ("field_spread", "seed_spread", "cos", "cos_best", "speed", "iou", "cos_encoded")}
    encoder = getattr(generator, "motion_encoder", None)
    for clip in generate_clips(n, res, frames, seed=seed, split="test"):
        moving = torch.from_numpy(clip["mask"] == 0)
        if moving.sum() < 16:
            continue
        image = torch.from_numpy(clip["video"][0]).permute(2, 0, 1)[None].float().div(255).expand(k, -1, -1, -1)
        feats = generator.encoder(image[:1] * 2 - 1)
        sq = torch.stack([f.pow(2).mean() for f in feats])
        enc_sq = sq if enc_sq is None else enc_sq + sq
        fields = generator.motion_fields(image, num_frames=frames, noise=noise)
        allowed = (fields.moving > 0).float()  # (K, 1, h, w)
        v = fields.velocity * allowed  # (K, 2, h, w): what the frames move by
        true = torch.from_numpy(clip["flow"]).mean(dim=0)  # (2, h, w) mean px/frame
        vm, tm = v[:, :, moving], true[:, moving]  # (K, 2, M), (2, M)
        means, true_mean = vm.mean(dim=2), tm.mean(dim=1)  # (K, 2), (2,)
        cos = _cosine(means, true_mean)
        if encoder is not None:
            video = torch.from_numpy(clip["video"]).permute(0, 3, 1, 2)[None].float().div(255)
            told = generator.motion_fields(image[:1], num_frames=frames, noise=encoder(video)[0])
            v_told = (told.velocity * (told.moving > 0).float())[:, :, moving].mean(dim=2)
            per_clip["cos_encoded"].append(_cosine(v_told, true_mean).item())
        lengths = means.norm(dim=1).sum()
        rms = fields.velocity.pow(2).mean().sqrt().clamp_min(1e-12)
        per_clip["field_spread"].append((fields.velocity.std(dim=0).pow(2).mean().sqrt() / rms).item())
        spread = max(0.0, (1 - means.sum(dim=0).norm() / lengths).item()) if lengths > 1e-6 else np.nan
        per_clip["seed_spread"].append(spread)
        per_clip["cos"].append(cos.mean().item())
        per_clip["cos_best"].append(cos.max().item())
        per_clip["speed"].append((vm.norm(dim=1).mean() / tm.norm(dim=0).mean().clamp_min(1e-9)).item())
        pred = allowed[0, 0] > 0
        per_clip["iou"].append(((pred & moving).sum() / (pred | moving).sum()).item())
    count = len(per_clip["cos"])
    out = {key: float(np.nanmean(vals)) if vals else np.nan for key, vals in per_clip.items()}
    out["encoder_rms"] = [round(float(v), 3) for v in (enc_sq / count).sqrt()]
    out["clips"] = count
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="motion-head snapshot/run dirs or .safetensors, or init:PRESET "
                   "(untrained); NAME=PATH to label one")
    p.add_argument("--n", type=int, default=64, help="held-out procedural scenes")
    p.add_argument("--k", type=int, default=8, help="latents per scene")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (test seed range)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    from vsyn.config import load_config
    from vsyn.inference import is_motion_model, load_generator
    from vsyn.nn import build_generator

    rows = {}
    for item in args.checkpoints:
        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        torch.manual_seed(0)
        if path.startswith("init:"):
            generator = build_generator(load_config(path[len("init:"):]).model).eval()
        else:
            generator, _ = load_generator(path, with_encoder=True)
        if not is_motion_model(generator) or generator.sample_noise(1) is None:
            print(f"{path}: not a motion head with latent noise", file=sys.stderr)
            return 2
        rows[label or path] = measure(generator, args.n, args.k, args.seed)
    first = next(iter(rows.values()))
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in rows.items():
        cells = [", ".join(f"{v:g}" for v in r["encoder_rms"]), f"{r['field_spread']:.2e}",
                 f"{r['seed_spread']:.3f}", f"{r['cos']:.3f}", f"{r['cos_best']:.3f}", f"{r['speed']:.3f}",
                 f"{r['iou']:.3f}", "n/a" if np.isnan(r["cos_encoded"]) else f"{r['cos_encoded']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    report = "\n".join([
        f"## bench/latent_use.py: does the motion head use its latent? {first['clips']} held-out scenes x "
        f"{args.k} latents — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(load_before),
        "- the model's own velocity fields against the true flow; definitions in the script's docstring",
        "",
        *lines,
        "",
    ])
    print(report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
