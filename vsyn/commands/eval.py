"""`vsyn eval CHECKPOINT --data URL --metrics fvd16,fid,psnr,ssim,motion --n 2048`: score a generator.

CHECKPOINT is a snapshot dir, a run dir or a .safetensors file (see `vsyn.inference.load_generator`), or a reference
row: `copy-frame0` (every frame = the input), `true-clip` (the real clip itself) or `true-clip-mp4` (the real clip
through H.264, as users receive video). --data `DIR` or `DIR/manifest.json` reads the held-out split (val, else
test); `...#train` scores training clips on purpose. Writes `metrics.json` and one protocol card per feature metric
(`<metric>.card.json`) into --out. Runs distributed under torchrun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from vsyn.errors import VsynError

COPY_FRAME0 = "copy-frame0"
REFERENCES = (COPY_FRAME0, "true-clip", "true-clip-mp4")
log = logging.getLogger("vsyn.eval")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="FVD/FID/PSNR/SSIM/LPIPS/motion of a checkpoint against real clips")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help=f"snapshot/run dir or .safetensors, or a reference row: {', '.join(REFERENCES)}")
    p.add_argument("--data", required=True, help="real clips: shard URL(s) or manifest.json; a manifest without "
                   "#split reads its val split, else its test split")
    p.add_argument("--metrics", default="fvd16,fid,psnr,ssim", help="comma list of fvd16,fvd128,fid,psnr,ssim,lpips,motion")
    p.add_argument("--n", type=int, default=2048, help="number of clips (default 2048, the field's standard)")
    p.add_argument("--frames", type=int, default=None, help="clip length T for psnr/ssim/lpips/motion, input "
                   "included (default: the model's training length, model.frames; 25 for reference rows)")
    p.add_argument("--motion-samples", type=int, default=8, help="K samples per clip for motion's best-of-K "
                   "(stochastic models)")
    p.add_argument("--out", default=None, help="output dir (default: <checkpoint>/eval or ./eval-copy-frame0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--batch", type=int, default=16, help="clips per detector call and per loader batch")
    p.add_argument("--seed", type=int, default=0, help="generator noise seed")
    p.add_argument("--resolution", type=int, default=None, help="size of the real clips: larger ones are resized "
                   "(short side, aspect kept) and centre-cropped (default: the model's)")
    p.add_argument("--data-stride", type=int, default=None, help="temporal stride when reading real clips "
                   "(default: the checkpoint's data.stride; must match the generator's frame rate)")
    p.add_argument("--split", default="", help="name of the real split, recorded in the cards (e.g. sky-test)")
    p.add_argument("--detector", default="i3d-videogpt", choices=["i3d-videogpt", "i3d-stylegan-v"],
                   help="FVD detector: the VideoGPT/TATS port (default) or StyleGAN-V's TorchScript")
    p.add_argument("--resize", default=None, choices=["direct", "short_side_crop"],
                   help="FVD resize path for i3d-videogpt (default direct 224x224)")
    p.add_argument("--stride", type=int, default=None, help="FVD/FID frame stride within generated clips (default 1)")
    p.add_argument("--i3d-weights", default=None, help="i3d_pretrained_400.pt or i3d_torchscript.pt "
                   "(default $VSYN_I3D_PATH / $VSYN_I3D_TORCHSCRIPT_PATH)")
    p.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth ($VSYN_INCEPTION_PATH)")
    p.add_argument("--lpips-weights", default=None, help="LPIPS v0.1 alex.pth ($VSYN_LPIPS_PATH)")
    p.add_argument("--alexnet-weights", default=None, help="alexnet-owt-7be5be79.pth ($VSYN_ALEXNET_PATH)")
    p.add_argument("--detector-sha256", default=None, help="expected sha256 of the FVD detector file (pins a file "
                   "whose published digest vsyn does not know; default $VSYN_I3D_SHA256)")
    p.add_argument("--cache-dir", default=None, help="real-statistics cache (default $VSYN_STATS_CACHE or "
                   "~/.cache/vsyn/stats)")
    p.add_argument("--bf16", action="store_true", help="detectors in bf16: faster, numbers NOT comparable")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator weights instead of the EMA")
    p.set_defaults(func=handler)


def _init_distributed(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def handler(args: argparse.Namespace) -> int:
    from vsyn.metrics import EvalSettings, METRICS, eval_data, evaluate, make_eval_loader, parse_metrics
    from vsyn.metrics.evaluate import DEFAULT_FRAMES, build_protocols, clip_frames, required_frames
    from vsyn.metrics.motion import TrueClip
    from vsyn.data.probe import clip_size, fit_note
    from vsyn.metrics.utils import copy_first_frame, rank_world

    names = parse_metrics(args.metrics)
    if (args.frames is not None and args.frames < 2) or args.motion_samples < 1:
        raise VsynError("--frames must be >= 2 and --motion-samples >= 1")
    data = eval_data(args.data)
    _init_distributed(args.device)
    device = args.device
    if device.startswith("cuda") and torch.distributed.is_initialized():
        device = f"cuda:{torch.cuda.current_device()}"
    frames = args.frames
    if args.checkpoint in REFERENCES:
        generator = {COPY_FRAME0: copy_first_frame, "true-clip": TrueClip(), "true-clip-mp4": TrueClip(mp4=True)}[
            args.checkpoint]
        resolution, data_stride = args.resolution, args.data_stride or 1
        frames = frames or DEFAULT_FRAMES
        out = Path(args.out or f"eval-{args.checkpoint}")
    else:
        from vsyn.inference import load_generator

        generator, cfg = load_generator(args.checkpoint, ema=not args.no_ema, device=device)
        resolution = args.resolution or cfg.model.resolution
        data_stride = args.data_stride or cfg.data.stride
        ckpt = Path(args.checkpoint)
        out = Path(args.out or (ckpt.parent if ckpt.suffix == ".safetensors" else ckpt) / "eval")

    if resolution is not None:  # readable data, and how its clips meet the model: before any detector loads
        note = fit_note(clip_size(args.data), resolution, random_crop=False,
                        key="--resolution" if args.resolution else "model.resolution")
        if note and rank_world()[0] == 0:
            log.info(note)
    overrides = {k: v for k, v in {"resize": args.resize, "stride": args.stride}.items() if v is not None}
    if args.detector == "i3d-stylegan-v":
        overrides["detector"] = "i3d-stylegan-v"
    sha = args.detector_sha256 or os.environ.get("VSYN_I3D_SHA256")
    settings = EvalSettings(
        n=args.n, device=device, batch=args.batch, seed=args.seed, bf16=args.bf16, cache_dir=args.cache_dir,
        split=args.split, shared_stream=True, protocol_overrides=overrides, frames=frames,
        motion_samples=args.motion_samples,
        weights={args.detector: args.i3d_weights, "inception-fid": args.inception_weights,
                 "lpips": args.lpips_weights, "alexnet": args.alexnet_weights},
        sha256={args.detector: sha} if sha else {},
    )
    need = required_frames(names, build_protocols(names, settings), clip_frames(generator, settings))
    loader = make_eval_loader(data, frames=need, batch_size=args.batch, size=resolution, stride=data_stride)
    values, cards = evaluate(generator, loader, names, data, settings, checkpoint=args.checkpoint)

    if rank_world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name, card in cards.items():
            card.save(out / f"{name}.card.json")
        summary = {"checkpoint": args.checkpoint, "data": data, "n": args.n,
                   "frames": clip_frames(generator, settings), "metrics": values,
                   "directions": {k: METRICS[k].better for k in values}, "cards": {k: f"{k}.card.json" for k in cards}}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        width = max(len(k) for k in values)
        print(f"{'metric':<{width}}  value        better        unit")
        for k, v in values.items():
            info = METRICS[k]
            print(f"{k:<{width}}  {v:<12.4f} {info.better:<13} {info.unit}")
        print(f"wrote {out / 'metrics.json'}")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
