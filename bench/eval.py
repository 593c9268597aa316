"""Benchmark: seconds to compute FVD features (I3D, random init) of N 16-frame 128 px clips.

What is timed: the whole feature path of `vsyn.metrics.fvd.video_features` -- frame selection, bilinear resize to
224x224, range mapping, I3D forward, copy to float64 on the host -- for clips already on the device. Rows:
fp32 (TF32 off: what the metrics use), and for comparison TF32 and bf16 autocast with their feature error against
fp32 over the first batch, both relative to the features' norm and to their spread between clips (what the
covariance in FVD sees): why the metrics keep fp32. The I3D is random but He-initialised so signals survive.

    python bench/eval.py                     # 2048 clips on GPU, 64 on CPU
    python bench/eval.py --n 256 --modes fp32

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import RESULTS, append_report, provenance  # noqa: E402  (bench/record.py)
from vsyn.metrics.fvd import video_features  # noqa: E402
from vsyn.metrics.i3d import I3D  # noqa: E402
from vsyn.metrics.protocol import standard_protocol  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="clips (default 2048 on GPU, 64 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="clips per I3D call (default 32 on GPU, 4 on CPU)")
    p.add_argument("--size", type=int, default=128, help="clip side in px before the resize to 224 (default 128)")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--modes", default=None, help="comma list of fp32,tf32,bf16 (default: all on GPU, fp32 on CPU)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune conv algorithms")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    n = args.n or (2048 if on_gpu else 64)
    batch = args.batch or (32 if on_gpu else 4)
    modes = (args.modes or ("fp32,tf32,bf16" if on_gpu else "fp32")).split(",")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    protocol = standard_protocol("fvd16", n=n)
    torch.manual_seed(0)
    detector = I3D()
    # He-normal init so activations keep their scale through the ~60 layers; with PyTorch's default init they
    # shrink to ~0 and every feature collapses onto the logits bias, which would make the error column meaningless.
    for m in detector.modules():
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    detector = detector.to(device).eval().requires_grad_(False)
    gen = torch.Generator(device=device).manual_seed(0)
    clips = torch.randint(0, 256, (n, protocol.clip_length, 3, args.size, args.size), dtype=torch.uint8,
                          device=device, generator=gen)
    reference = video_features(detector, clips[:batch], protocol, batch=batch)  # also the warm-up
    print(f"feature scale: mean |f| {np.abs(reference).mean():.3g}, std over clips {reference.std(0).mean():.3g}")
    rows = []
    for mode in modes:
        kw = {"bf16": mode == "bf16", "tf32": mode == "tf32"}
        first = video_features(detector, clips[:batch], protocol, batch=batch, **kw)  # warm-up for this mode
        err = float(np.linalg.norm(first - reference) / np.linalg.norm(reference))
        # the same error against the spread between clips, which is what a covariance (and FVD) sees
        err_spread = float(np.sqrt(((first - reference) ** 2).mean()) / reference.std(0).mean())
        sync(device)
        t0 = time.perf_counter()
        feats = video_features(detector, clips, protocol, batch=batch, **kw)
        sync(device)
        seconds = time.perf_counter() - t0
        assert feats.shape == (n, 400) and np.isfinite(feats).all()
        rows.append({"mode": mode, "seconds": seconds, "clips_s": n / seconds, "err": err, "err_spread": err_spread})
        print(f"{mode}: {seconds:.2f} s for {n} clips ({n / seconds:.1f} clips/s), feature rel. error {err:.2e}, "
              f"error / between-clip std {err_spread:.2e}", flush=True)
        if on_gpu:
            torch.cuda.empty_cache()

    lines = ["| precision | clips | batch | seconds | clips/s | feature rel. L2 error vs fp32 | error / between-clip std |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {n} | {batch} | {r['seconds']:.2f} | {r['clips_s']:.1f} | {r['err']:.1e} | "
                     f"{r['err_spread']:.1e} |")
    peak = f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if on_gpu else ""
    report = "\n".join([
        f"## bench/eval.py: FVD features, I3D (random init), {n} clips x 16 frames, {args.size} px -> 224 — "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        *provenance(),
        f"- device {device}; clips resident on the device; timed: resize + range + I3D + host copy{peak}; "
        f"cudnn.benchmark={args.cudnn_benchmark}",
        "",
        *lines,
        "",
    ])
    print("\n" + report)
    if not args.no_record:
        append_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
