"""Full-resolution animation with the motion head: model fields, warping the photo, encoding — where the time goes.

For each output size: `fields` (the model over the photo's square windows at model resolution, stitched:
vsyn.inference.motion_canvas), `render` (upsampling the fields and warping the photo at the output size, chunk by
chunk, frames downloaded to host memory as uint8: vsyn.render.render), their sum (generation + warping, what the
target is about), and the mp4 encode of those frames apart. Wall clock with the device synchronised; medians.

    python bench/animate.py --device cuda --config motion128 --sizes 1920x1080 --frames 25 --precision bf16
    python bench/animate.py --config motion128 --sizes 1920x1080 --repeats 3          # CPU

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from record import append_report, provenance  # bench/record.py
from timing import wall_ms  # bench/timing.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsyn.config import load_config  # noqa: E402
from vsyn.inference import motion_canvas  # noqa: E402
from vsyn.nn import build_generator  # noqa: E402
from vsyn.render import read_ahead, render  # noqa: E402
from vsyn.video import encode_chunks  # noqa: E402

HEADER = ["size", "frames", "precision", "loop", "fields ms", "render ms", "fields + render ms", "encode ms (mp4)",
          "end to end ms", "end to end, render ahead ms"]


def photo(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A landscape-like uint8 photo: sky gradient with soft texture over textured ground."""
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.array([90, 140, 230]) + y * np.array([80, 60, -30]) + rng.normal(0, 6, (height, width, 1))
    ground = np.array([60, 110, 50]) + rng.normal(0, 12, (height, width, 3))
    return np.where(y > 0.6, ground, sky).clip(0, 255).astype(np.uint8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="motion128", help="motion-head preset whose generator is built (random init)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="1920x1080", help="comma list of WxH output sizes (the photo has that size)")
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--precision", default="fp32", help="comma list of fp32, bf16 (the model only; warping is fp32)")
    p.add_argument("--loop", default="off", help="comma list of off, on")
    p.add_argument("--encoder-preset", default="veryfast")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(args.config)
    if cfg.model.head != "motion":
        p.error(f"{args.config} is not a motion-head preset")
    torch.manual_seed(0)
    generator = build_generator(cfg.model).to(device).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        image = photo(h, w, rng)
        for precision in args.precision.split(","):
            amp = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                   else contextlib.nullcontext())
            for loop in args.loop.split(","):
                state: dict = {}

                def fields() -> None:
                    with amp:
                        state["f"] = motion_canvas(generator, image, num_frames=args.frames, seed=0)
                    sync(device)

                def warp() -> None:
                    state["frames"] = list(render(image, state["f"], (h, w), args.frames, loop=loop == "on",
                                                  device=device))

                for _ in range(2):  # cuDNN autotuning, allocator
                    fields()
                    warp()
                f_ms = wall_ms(fields, args.repeats)
                r_ms = wall_ms(warp, args.repeats)
                e_ms = wall_ms(lambda: encode_chunks(state["frames"], 25, "mp4", preset=args.encoder_preset),
                               max(1, args.repeats // 2))

                def overlapped() -> None:  # as `vsyn animate` runs it: the next chunk renders while one encodes
                    fields()
                    chunks = read_ahead(render(image, state["f"], (h, w), args.frames, loop=loop == "on",
                                               device=device))
                    encode_chunks(chunks, 25, "mp4", preset=args.encoder_preset)

                o_ms = wall_ms(overlapped, max(1, args.repeats // 2))
                row = [f"{w}x{h}", str(args.frames), precision, loop, f"{f_ms:.1f}", f"{r_ms:.1f}",
                       f"{f_ms + r_ms:.1f}", f"{e_ms:.1f}", f"{f_ms + r_ms + e_ms:.1f}", f"{o_ms:.1f}"]
                print("| " + " | ".join(row) + " |", flush=True)
                rows.append(row)
    table = "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---:|" * len(HEADER)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if not args.no_record and rows:
        append_report("\n".join([
            f"\n## bench/animate.py: {args.config} motion head, full-resolution animation — "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", *provenance(),
            f"- fields: the model over the photo's windows (random init, {args.precision}); render: upsample and warp "
            f"at the output size, frames to host uint8; encode: mp4 ({args.encoder_preset}), one thread; end to end, "
            f"render ahead: the three as `vsyn animate` runs them, the next chunk rendered while one is encoded "
            f"(vsyn.render.read_ahead); wall-clock medians of {args.repeats}", "", table, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
