"""Ground-truth motion benchmark: flow error, static-region leakage and PSNR over time on procedural clips.

Rows: "copy frame 0" (always; the zero-motion reference) and one per checkpoint given (e.g. the DVD-GAN-S
baseline and the style-based generator trained for the same budget). Clips come from procedural shards (--data URL
or manifest, read with vsyn.data) or are generated in memory (--data procedural:N, with --size/--frames).

    python bench/motion.py --data procedural:64 --size 64 --frames 25
    python bench/motion.py runs/dvdgan/checkpoints/ckpt-... runs/style/checkpoints/ckpt-... --data s3://b/proc-test/

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)

from vsyn.metrics.motion import ESTIMATOR, benchmark, format_table  # noqa: E402
from vsyn.metrics.utils import copy_first_frame  # noqa: E402


def procedural_loader(n: int, size: int, frames: int, batch: int, seed: int):
    from shards.procedural import generate_clips

    clips = list(generate_clips(n, size, frames, seed=seed))
    for i in range(0, n, batch):
        part = clips[i:i + batch]
        yield {"video": torch.from_numpy(np.stack([c["video"] for c in part])).permute(0, 1, 4, 2, 3).contiguous(),
               "flow": torch.from_numpy(np.stack([c["flow"] for c in part])),
               "mask": torch.from_numpy(np.stack([c["mask"] for c in part]))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="snapshot/run dirs or .safetensors files")
    p.add_argument("--data", default="procedural:64", help="procedural shard URL/manifest, or procedural:N")
    p.add_argument("--n", type=int, default=None, help="clips (default: all of procedural:N, else 256)")
    p.add_argument("--size", type=int, default=64, help="clip side for procedural:N and the shard crop")
    p.add_argument("--frames", type=int, default=25, help="clip length (input frame included)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1, help="dataset seed for procedural:N (training data uses 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args()

    def loader():
        if args.data.startswith("procedural:"):
            count = int(args.data.split(":", 1)[1])
            return procedural_loader(count, args.size, args.frames, args.batch, args.seed), count
        from vsyn.metrics import make_eval_loader

        return make_eval_loader(args.data, frames=args.frames, batch_size=args.batch, size=args.size), 256

    rows = {}
    models: list[tuple[str, object]] = [("copy frame 0", copy_first_frame)]
    for path in args.checkpoints:
        from vsyn.inference import load_generator

        gen, cfg = load_generator(path, device=args.device)
        models.append((f"{cfg.model.generator} ({Path(path).name})", gen))
    for name, model in models:
        data, default_n = loader()
        rows[name] = benchmark(model, data, n=args.n or default_n, device=args.device)
        print(f"{name}: EPE {rows[name]['epe_moving_px']:.3f} px/frame, leak {rows[name]['leak_static_l1']:.3f}, "
              f"PSNR {rows[name]['psnr_db']:.2f} dB", flush=True)

    first = next(iter(rows.values()))
    report = "\n".join([
        f"## bench/motion.py: ground-truth motion benchmark, {first['clips']} clips x {args.frames} frames, "
        f"{args.size} px — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(),
        f"- data: {args.data}; flow estimator: {ESTIMATOR}; EPE over the moving region (4 px border excluded); "
        "leak = mean |x_t - x_(t-1)|, drift = mean |x_t - x_0| over static pixels, 8-bit levels",
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
