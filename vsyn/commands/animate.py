"""`vsyn animate CHECKPOINT IMAGE -o out.mp4`: one still image in, one video file out."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vsyn.errors import VsynError
from vsyn.video import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("animate", help="animate one image with a trained generator")
    p.add_argument("checkpoint", help="snapshot dir, run dir (newest checkpoint) or .safetensors with config.json")
    p.add_argument("image", help="PNG, JPEG or WebP image (what the server accepts); resized (short side) and "
                   "center-cropped to the model size")
    p.add_argument("-o", "--output", required=True, help="output video path")
    p.add_argument("--frames", type=int, default=None, help="frames incl. the input (default: the training length)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent noise (stochastic generators)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output video")
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="default: from the output suffix")
    p.add_argument("--mask", default=None, help="optional grey PNG/JPEG/WebP of the image's size: white = may move, "
                   "black = stays the input")
    p.add_argument("--raw-weights", action="store_true", help="use the raw generator instead of its EMA")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsyn.inference import animate, load_generator, read_image_and_mask
    from vsyn.video import encode_video

    output = Path(args.output)
    fmt = args.format or output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise VsynError(f"cannot tell the video format from '{output}'; pass --format ({', '.join(FORMATS)})")
    if args.frames is not None and args.frames < 2:
        raise VsynError("--frames must be >= 2 (frame 0 is the input)")
    if args.fps <= 0 or args.fps > 240:
        raise VsynError("--fps must be in (0, 240]")
    generator, cfg = load_generator(args.checkpoint, ema=not args.raw_weights, device=args.device)
    res = cfg.model.resolution
    image, mask = read_image_and_mask(args.image, args.mask, res)
    frames = animate(generator, image[None], num_frames=args.frames, seeds=[args.seed],
                     mask=None if mask is None else mask[None])[0]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(encode_video(frames, fps=args.fps, fmt=fmt))
    print(f"wrote {output} ({frames.shape[0]} frames, {res}x{res}, {fmt})")
    return 0
