"""Ground-truth motion benchmark: vsyn.metrics.motion (the metrics `vsyn eval` and the snapshots report) per model,
beside the reference rows every model is read against: "copy frame 0" (no motion), "true clip" (the estimator's
floor) and "true clip (mp4)" (the true clip through H.264, as users receive video).

Clips come from procedural shards (--data DIR/manifest.json: its held-out split, val else test) or are generated in
memory from the held-out test seed range (--data procedural:N, with --size/--frames).

    python bench/motion.py --data procedural:64 --size 64 --frames 25
    python bench/motion.py runs/style/checkpoints/best-motion_score runs/dvdgan/checkpoints/best-motion_score \\
        --data data/proc64-test --n 256

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)

from vsyn.metrics.motion import ESTIMATOR, MOTION_SAMPLES, TrueClip, benchmark, format_table  # noqa: E402
from vsyn.metrics.utils import copy_first_frame  # noqa: E402


def procedural_loader(n: int, size: int, frames: int, batch: int, seed: int):
    """Held-out test scenes (their own seed range), generated in memory, in the loader's batch format."""
    from shards.procedural import generate_clips

    clips = list(generate_clips(n, size, frames, seed=seed, split="test"))
    for i in range(0, n, batch):
        part = clips[i:i + batch]
        yield {"video": torch.from_numpy(np.stack([c["video"] for c in part])).permute(0, 1, 4, 2, 3).contiguous(),
               "flow": torch.from_numpy(np.stack([c["flow"] for c in part])),
               "mask": torch.from_numpy(np.stack([c["mask"] for c in part]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="snapshot/run dirs or .safetensors files; NAME=PATH to label one")
    p.add_argument("--data", default="procedural:64", help="procedural shards (DIR, manifest.json[#split]), or "
                   "procedural:N for N held-out test scenes made in memory")
    p.add_argument("--n", type=int, default=None, help="clips (default: all of procedural:N, else 256)")
    p.add_argument("--size", type=int, default=64, help="clip side for procedural:N and the shard crop")
    p.add_argument("--frames", type=int, default=25, help="clip length T (input frame included)")
    p.add_argument("--samples", type=int, default=MOTION_SAMPLES, help="K samples per clip (stochastic models)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="dataset seed for procedural:N (test seed range)")
    p.add_argument("--no-references", action="store_true", help="skip the copy-frame-0 and true-clip rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args()
    load_before = os.getloadavg()[0]

    def loader():
        if args.data.startswith("procedural:"):
            count = int(args.data.split(":", 1)[1])
            return procedural_loader(count, args.size, args.frames, args.batch, args.seed), count
        from vsyn.metrics import make_eval_loader

        return make_eval_loader(args.data, frames=args.frames, batch_size=args.batch, size=args.size), 256

    models: list[tuple[str, object]] = []
    if not args.no_references:
        models += [("copy frame 0", copy_first_frame), ("true clip", TrueClip()), ("true clip (mp4)", TrueClip(mp4=True))]
    for item in args.checkpoints:
        from vsyn.inference import load_generator

        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        gen, cfg = load_generator(path, device=args.device)
        models.append((label or f"{cfg.model.generator} ({Path(path).name})", gen))
    rows = {}
    for name, model in models:
        data, default_n = loader()
        start = time.perf_counter()
        rows[name] = benchmark(model, data, n=args.n or default_n, device=args.device, frames=args.frames,
                               samples=args.samples)
        r = rows[name]
        print(f"{name}: leak {r['motion_leak']:.4f}, speed {r['motion_speed_ratio']:.3f}, dir cos best-of-K "
              f"{r['motion_dir_cos_bestk']:.3f}, warp {r['motion_warp_error']:.2f}, score {r['motion_score']:.3f} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)

    first = next(iter(rows.values()))
    report = "\n".join([
        f"## bench/motion.py: motion metrics vs ground truth, {first['clips']} clips x {args.frames} frames, "
        f"{args.size} px — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(load_before),
        f"- data: {args.data}; flow estimator: {ESTIMATOR}; K = {args.samples} samples per clip for stochastic "
        "models; definitions in vsyn/metrics/README.md",
        f"- estimator floor on the true clips: EPE {first['motion_floor_epe']:.3f} px/frame, estimated / true speed "
        f"{first['motion_floor_speed_ratio']:.3f}, warp error {first['motion_floor_warp_error']:.2f} (8-bit levels)",
        "",
        format_table(rows),
        "",
        "PSNR by time step (dB): " + "; ".join(
            f"{name}: " + ", ".join(f"{v:.1f}" for v in r["psnr_t_db"]) for name, r in rows.items()),
        "",
    ])
    print("\n" + report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
