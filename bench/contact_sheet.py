"""A contact sheet of a full-resolution animation: frames 0 / middle / last of one image and ×4 |last − first|.

The image is a held-out procedural landscape (test seed range, never trained on) rendered at --size px, or a photo
given with --image; the model animates it at the image's own size (motion head) and the sheet is written as PNG.

    python bench/contact_sheet.py bench/models/motion64 -o bench/motion64-contact.png --size 512 --scene 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards.procedural import clip_seed, make_clip  # noqa: E402
from vsyn.inference import animate_photo, load_generator, read_image  # noqa: E402
from vsyn.video import contact_sheet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="snapshot dir, run dir or .safetensors beside a config.json")
    p.add_argument("-o", "--output", required=True, help="PNG path")
    p.add_argument("--image", default="", help="animate this image instead of a procedural scene")
    p.add_argument("--scene", type=int, default=0, help="index of the held-out procedural scene (test seeds)")
    p.add_argument("--size", type=int, default=512, help="side of the procedural scene in px (default 512)")
    p.add_argument("--frames", type=int, default=25, help="frames incl. the input (default 25)")
    p.add_argument("--seed", type=int, default=0, help="latent noise seed")
    p.add_argument("--video", default="", help="also write the animation here (.mp4)")
    args = p.parse_args(argv)
    generator, _ = load_generator(args.checkpoint)
    photo = read_image(args.image) if args.image else make_clip(clip_seed(0, args.scene, "test"), args.size, 2)["video"][0]
    (h, w), chunks = animate_photo(generator, photo, num_frames=args.frames, seed=args.seed)
    frames = np.concatenate(list(chunks))
    mid, last = args.frames // 2, args.frames - 1
    sheet = contact_sheet({0: frames[0], mid: frames[mid], last: frames[last]})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.output)
    if args.video:
        from vsyn.video import write_video

        write_video(args.video, frames)
    moved = np.abs(frames[last].astype(int) - frames[0]).max(axis=-1) > 0
    print(f"wrote {args.output}: {w}x{h}, frames 0/{mid}/{last} and x4 |{last} - 0|; "
          f"{100 * moved.mean():.1f}% of the pixels changed by frame {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
