"""Where a served batch's time goes: the generator on the device, the whole `animate` call, and the encodes.

For each batch size: the generator alone (CUDA-graph replay or eager forward, CUDA events), `vsyn.inference.animate`
around it (upload, mask/frame-0 fix-up, uint8 conversion, download: wall clock), and encoding the batch's videos
with the serving handler's thread pool (x264 preset as given). The last columns bound one worker's videos/s by
the generator alone and by animate + encode in sequence (what one handler process does per batch).

    python bench/generate.py --device cuda --batch 1,8,16,32 --precision bf16 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from profiling import profile_to  # bench/profiling.py
from record import append_report, provenance  # bench/record.py
from timing import timed_ms, wall_ms  # bench/timing.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsyn.config import load_config  # noqa: E402
from vsyn.graphs import GraphedGenerator  # noqa: E402
from vsyn.inference import animate  # noqa: E402
from vsyn.nn import build_generator  # noqa: E402
from vsyn.nn.layers import to_channels_last  # noqa: E402
from vsyn.video import encode_video  # noqa: E402

HEADER = ["batch", "precision", "layout", "variant", "graphs", "generator ms", "animate ms", "encode ms", "videos/s (generator)",
          "videos/s (animate + encode)"]


@contextlib.contextmanager
def variant(name: str):
    """'fused': the library as it is. 'unfused': the layers as they were before the fusion, for an A/B in one run:
    2x upsampling as transposed conv + pad + depthwise blur, and StyledConv's bias/activation op by op."""
    if name == "fused":
        yield
        return
    assert name == "unfused", name
    from vsyn.nn import layers

    def op_by_op(self, x, style):
        return self.act(self.conv(x, style))

    saved = layers.FOLD_BLUR_DEVICES, layers.StyledConv.forward
    layers.FOLD_BLUR_DEVICES, layers.StyledConv.forward = set(), op_by_op
    try:
        yield
    finally:
        layers.FOLD_BLUR_DEVICES, layers.StyledConv.forward = saved


def landscapes(batch: int, res: int, rng: np.random.Generator) -> np.ndarray:
    """Sky gradient over textured ground, uint8 (B, H, W, 3): content x264 sees in practice, not white noise."""
    y = np.linspace(0, 1, res)[None, :, None, None]
    sky = np.array([90, 140, 230]) + y * np.array([80, 60, -30]) + rng.uniform(-20, 20, (batch, 1, 1, 3))
    ground = np.array([60, 110, 50]) + rng.normal(0, 12, (batch, res, res, 3))
    return np.where(y > 0.6, ground, sky + 0 * ground).clip(0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="sky128", help="preset whose generator is built (random init)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--precision", default="bf16", help="comma list of fp32, bf16")
    p.add_argument("--layout", default="nchw", help="comma list of nchw, cl (channels_last weights)")
    p.add_argument("--variant", default="fused", help="comma list of fused, unfused (the layers before the fusion)")
    p.add_argument("--graphs", default="on", help="comma list of on, off (CUDA-graph replay; off on a CPU)")
    p.add_argument("--encoder-preset", default="veryfast")
    p.add_argument("--encode-threads", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--profile", default="", help="write profile tables of one eager forward per batch size here")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = load_config(args.config)
    torch.manual_seed(0)
    base = build_generator(cfg.model).to(device).eval()
    res, frames = cfg.model.resolution, cfg.model.frames
    rng = np.random.default_rng(0)
    encoder = ThreadPoolExecutor(max_workers=args.encode_threads)
    rows = []
    for precision, name, layout in itertools.product(args.precision.split(","), args.variant.split(","),
                                                     args.layout.split(",")):
        with variant(name):
            generator = to_channels_last(copy.deepcopy(base)) if layout == "cl" else base
            for graphs in args.graphs.split(","):
                if graphs == "on" and device.type != "cuda":
                    continue
                model = GraphedGenerator(generator, max_batch=64, enabled=graphs == "on")
                amp = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                       else contextlib.nullcontext())
                for batch in (int(b) for b in args.batch.split(",")):
                    images = landscapes(batch, res, rng)
                    x = torch.tensor(images, device=device).permute(0, 3, 1, 2).float().div(255)
                    with amp, torch.no_grad():
                        for _ in range(3):  # capture / autotune / allocator
                            videos = animate(model, images, num_frames=frames)
                        gen_ms = timed_ms(lambda: model(x, num_frames=frames), args.repeats, device)
                        anim_ms = wall_ms(lambda: animate(model, images, num_frames=frames), args.repeats)
                        if args.profile and graphs == "off":
                            path = Path(args.profile) / f"generate-{args.config}-{precision}-{layout}-{name}-b{batch}.txt"
                            profile_to(path, lambda: model(x, num_frames=frames), device)
                            print(f"profile -> {path}", flush=True)
                    enc_ms = wall_ms(lambda: list(encoder.map(
                        lambda v: encode_video(v, fmt="mp4", preset=args.encoder_preset), videos)), 3)
                    row = [str(batch), precision, layout, name, graphs, f"{gen_ms:.1f}", f"{anim_ms:.1f}", f"{enc_ms:.1f}",
                           f"{1e3 * batch / gen_ms:.0f}", f"{1e3 * batch / (anim_ms + enc_ms):.0f}"]
                    print("| " + " | ".join(row) + " |", flush=True)
                    rows.append(row)
    table = "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---:|" * len(HEADER)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if not args.no_record and rows:
        append_report("\n".join([
            f"\n## bench/generate.py: {args.config} generator, {frames} frames — "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", *provenance(),
            f"- generator ms: device time of one forward (CUDA events; wall clock on a CPU); animate ms: wall clock of "
            f"`animate` (upload, forward, uint8, download); encode ms: the batch's mp4s ({args.encoder_preset}) on "
            f"{args.encode_threads} threads; medians of {args.repeats} (encode: 3)", "", table, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
