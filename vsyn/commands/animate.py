"""`vsyn animate CHECKPOINT IMAGE -o out.mp4`: one still image in, one video file out."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vsyn.errors import VsynError
from vsyn.video import FORMATS


def _size(value: str) -> str | int:
    if value in ("input", "model"):
        return value
    try:
        side = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not 'input', 'model' or a long side in px") from None
    if side < 2:
        raise argparse.ArgumentTypeError("the long side must be >= 2 px")
    return side


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("animate", help="animate one image with a trained generator")
    p.add_argument("checkpoint", help="snapshot dir, run dir (newest checkpoint) or .safetensors with config.json")
    p.add_argument("image", help="PNG, JPEG or WebP image (what the server accepts). Motion-head models warp the "
                   "image itself at its own size and aspect; pixel-head models see and return a centre crop at the "
                   "model size")
    p.add_argument("-o", "--output", required=True, help="output video path")
    p.add_argument("--frames", type=int, default=None, help="frames incl. the input (default: the training length)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent noise: picks one of the possible futures")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second of the video (default 25)")
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="default: from the output suffix")
    p.add_argument("--size", type=_size, default=None, help="'input' (the image's own size; motion head default), "
                   "'model' (the model's square; pixel head default) or the long side in px")
    p.add_argument("--max-side", type=int, default=1920, help="cap on the long side in px (default 1920)")
    p.add_argument("--loop", action="store_true", help="a seamless loop: the last frame flows into the first "
                   "(motion head)")
    p.add_argument("--mask", default=None, help="optional grey PNG/JPEG/WebP of the image's size: white = may move, "
                   "black = stays the input bit for bit")
    p.add_argument("--sheet", default=None, help="also write a contact sheet PNG here: the first, middle and last "
                   "frames and 4x |last - first| (black where nothing moved)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw generator instead of its EMA")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsyn.inference import animate_photo, is_motion_model, load_generator, read_photo_and_mask
    from vsyn.video import encode_chunks

    output = Path(args.output)
    fmt = args.format or output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise VsynError(f"cannot tell the video format from '{output}'; pass --format ({', '.join(FORMATS)})")
    if args.frames is not None and args.frames < 2:
        raise VsynError("--frames must be >= 2 (frame 0 is the input)")
    if args.fps <= 0 or args.fps > 240:
        raise VsynError("--fps must be in (0, 240]")
    if args.max_side < 2:
        raise VsynError("--max-side must be >= 2")
    photo, mask = read_photo_and_mask(args.image, args.mask)
    generator, cfg = load_generator(args.checkpoint, ema=not args.raw_weights, device=args.device)
    size = args.size or ("input" if is_motion_model(generator) else "model")
    (h, w), chunks = animate_photo(generator, photo, num_frames=args.frames, seed=args.seed, size=size,
                                   max_side=args.max_side, loop=args.loop, mask=mask)
    total = args.frames or generator.frames
    counted = _Counter(chunks, keep={0, total // 2, total - 1} if args.sheet else set())
    data = encode_chunks(counted, fps=args.fps, fmt=fmt)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    print(f"wrote {output} ({counted.frames} frames, {w}x{h}, {fmt}{', loop' if args.loop else ''})")
    if args.sheet:
        from PIL import Image

        from vsyn.video import contact_sheet

        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(contact_sheet(counted.kept)).save(args.sheet)
        print(f"wrote {args.sheet} (frames {', '.join(map(str, sorted(counted.kept)))} and 4x |last - first|)")
    return 0


class _Counter:
    """Counts the frames of the chunks passing through to the encoder, and keeps copies of the frames in `keep`."""

    def __init__(self, chunks, keep: set[int] = frozenset()) -> None:
        self.chunks, self.frames, self.keep = chunks, 0, keep
        self.kept: dict = {}

    def __iter__(self):
        for chunk in self.chunks:
            for i in range(len(chunk)):
                if self.frames + i in self.keep:
                    self.kept[self.frames + i] = chunk[i].copy()
            self.frames += len(chunk)
            yield chunk
