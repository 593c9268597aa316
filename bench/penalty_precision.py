"""How far the gradient penalty moves when its critic forward and double backward run in TF32 or bf16 instead of fp64.

The penalty is most of a WGAN-GP critic step, so running it under bf16 autocast (loss.penalty_precision=autocast) is
the largest single speed-up of the critic step; this measures what it costs in accuracy. For each precision it
computes, on the same critics and clips, the per-critic penalty GP = E[(‖∇x D(x̂)‖ − 1)²] and the gradient of
GP_S + GP_T with respect to every critic parameter, and reports their error relative to a float64 reference:
  |GP − GP64| / GP64 per critic, and ‖∇θ − ∇θ64‖ / ‖∇θ64‖ over all parameters.
The critics are freshly initialised (random weights) at the chosen config; the clips are smooth drifting textures.

  python bench/penalty_precision.py --config sky128 --batch 4     # GPU
  python bench/penalty_precision.py --config tiny --no-record      # CPU smoke test
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import append_report, commit, machine  # noqa: E402  (bench/record.py)
from train import CONFIGS, synthetic_clips  # noqa: E402  (bench/train.py)
from vsyn import losses  # noqa: E402
from vsyn.config import load_config  # noqa: E402
from vsyn.nn import build_critics, sample_frame_indices  # noqa: E402


def penalty_and_grads(critics, real, fake, idx, a_s, a_t, *, dtype, autocast, tf32):
    """GP_S, GP_T (floats) and the flat parameter gradient of their sum, computed with the given numerics."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    model = critics.to(dtype)
    model.zero_grad(set_to_none=True)
    real, fake, a_s, a_t = (t.to(dtype) for t in (real, fake, a_s, a_t))
    frames = (a_s * real[:, idx] + (1 - a_s) * fake[:, idx]).detach().requires_grad_(True)
    video = (a_t * real + (1 - a_t) * fake).detach().requires_grad_(True)
    with torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=autocast):
        gp_s = losses.gradient_penalty(model.spatial(frames, real[:, 0]), frames, batch_dims=2)
        gp_t = losses.gradient_penalty(model.temporal(video), video, batch_dims=1)
    (gp_s + gp_t).backward()
    grads = torch.cat([p.grad.reshape(-1).double() for p in model.parameters() if p.grad is not None])
    return gp_s.item(), gp_t.item(), grads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="sky128", choices=list(CONFIGS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    preset, overrides = CONFIGS[args.config]
    cfg = load_config(preset, overrides)
    m = cfg.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    critics = build_critics(m).to(device).eval()  # eval: spectral norm keeps its u, v (the trainer's penalty mode)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    real = synthetic_clips(args.batch, m.frames, m.resolution, device, gen).float() / 255
    fake = synthetic_clips(args.batch, m.frames, m.resolution, device, gen).float() / 255
    idx = sample_frame_indices(m.frames, m.spatial_frames, device=device)
    a_s = torch.rand(args.batch, m.spatial_frames, 1, 1, 1, device=device, generator=gen)
    a_t = torch.rand(args.batch, 1, 1, 1, 1, device=device, generator=gen)

    ref_s, ref_t, ref_g = penalty_and_grads(critics, real, fake, idx, a_s, a_t, dtype=torch.float64, autocast=False,
                                            tf32=False)
    rows = []
    for name, autocast, tf32 in (("fp32", False, False), ("tf32", False, True), ("bf16 autocast", True, True)):
        gp_s, gp_t, g = penalty_and_grads(critics, real, fake, idx, a_s, a_t, dtype=torch.float32, autocast=autocast,
                                          tf32=tf32)
        rows.append([name, f"{gp_s:.5g}", f"{abs(gp_s - ref_s) / abs(ref_s):.1e}", f"{gp_t:.5g}",
                     f"{abs(gp_t - ref_t) / abs(ref_t):.1e}", f"{((g - ref_g).norm() / ref_g.norm()).item():.1e}"])
    rows.insert(0, ["float64 (reference)", f"{ref_s:.5g}", "0", f"{ref_t:.5g}", "0", "0"])
    header = ["precision", "GP spatial", "rel. error", "GP temporal", "rel. error", "‖∇θ error‖ / ‖∇θ‖"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if not args.no_record:
        append_report("\n".join([
            f"\n## bench/penalty_precision.py: {args.config}, batch {args.batch} — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {machine()}",
            f"- commit: {commit()}",
            f"- command: `{shlex.join(['python', 'bench/penalty_precision.py', *(argv or sys.argv[1:])])}`",
            "- WGAN-GP penalty of freshly initialised critics on smooth drifting clips; errors against float64.",
            "",
            table,
            "",
        ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
