"""Training-step speed on one device: clips/s over a 2-critic + 1-generator cycle, ms per G and D step, peak memory,
MFU.

Runs the trainer's own pieces (vsyn.train: runtime, loss phases, EMA) exactly as the loop does, with a fresh batch
per step. Clips are made on the device (smooth random textures drifting over a static half, no host copies) or,
with --shards DIR, streamed from shards through the training reader (data pipeline included).

FLOPs per step come from torch.utils.flop_counter.FlopCounterMode (forward, backward and the penalty's double
backward), MFU is against a bf16 matmul peak measured on this device at start-up. Configs:
  sky128  the original's 128 px setup: G ch 32, D_S ch 16, D_T ch 64, 25 frames, batch 8, WGAN-GP
  bair64  the original's 64 px setup: G ch 16, D_S ch 32, D_T ch 32, 25 frames, batch 8, WGAN-GP
  tiny    32 px, ch 4, 9 frames, batch 4: a CPU smoke test of this script

  python bench/train.py                                   # sky128+bair64 x precisions x eager/compiled/graphed
  python bench/train.py --configs bair64 --precision bf16 --mode compiled --cycles 20
  python bench/train.py --configs tiny --cycles 2 --warmup 1 --no-record   # CPU
  torchrun --nproc_per_node 4 bench/train.py --configs bair64 --batch 32 --shards DIR --reading global,per_rank

Weak scaling: run under torchrun with --batch = per-GPU batch x processes (clips/s counts all processes).
--reading per_rank: each process reads only its own clips (data.reading=per_rank) instead of the global batch.
--set KEY=VALUE applies config overrides to every row (e.g. train.cudnn_benchmark_limit=1 to time the warm-up).

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import itertools
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling import profile_to  # noqa: E402  (bench/profiling.py)
from record import RESULTS, append_report, commit, machine  # noqa: E402  (bench/record.py)
from vsyn.config import Config, load_config  # noqa: E402
from vsyn.errors import VsynError  # noqa: E402
from vsyn.train.loss import VideoGANLoss  # noqa: E402
from vsyn.train.randomness import StepRandom  # noqa: E402
from vsyn.train.loop import setup  # noqa: E402
from vsyn.train.steps import TrainSteps  # noqa: E402

CONFIGS = {
    "sky128": ("sky128", []),
    "bair64": ("bair64", []),
    "motion128": ("motion128", []),  # sky128's networks with the motion head
    "motion64": ("motion64", []),  # bair64's networks with the motion head
    "tiny": ("tiny-cpu", ["model.ch_g=4", "model.ch_ds=4", "model.ch_dt=4", "train.batch=4", "model.frames=9"]),
}


def preset(name: str) -> tuple[str, list[str]]:
    """(preset, overrides) of a --configs name: the table above, or any preset as it is (e.g. a motion-head one)."""
    return CONFIGS.get(name, (name, []))


# The original implementation on one H100: clips/s with one micro-batch of 8, no host copies.
ANCHOR_CLIPS_PER_S = {"sky128": 11.05, "bair64": 35.5}


@dataclass
class Row:
    config: str
    precision: str
    layout: str
    mode: str
    data: str
    gpus: int
    clips_per_s: float
    warmup_s: float
    ms_g: float
    ms_d: float
    peak_gib: float
    tflop_cycle: float
    mfu: float

    def cells(self) -> list[str]:
        anchor = ANCHOR_CLIPS_PER_S.get(self.config)
        return [self.config, self.precision, self.layout, self.mode, self.data, str(self.gpus), f"{self.clips_per_s:.2f}",
                f"{self.clips_per_s / anchor:.2f}x" if anchor else "-", f"{self.warmup_s:.1f}", f"{self.ms_g:.1f}",
                f"{self.ms_d:.1f}",
                f"{self.peak_gib:.2f}", f"{self.tflop_cycle:.3f}", f"{100 * self.mfu:.1f}"]


HEADER = ["config", "precision", "layout", "mode", "data", "processes", "clips/s (all)", "vs original", "warm-up (s)",
          "ms per G step", "ms per D step",
          "peak GPU memory (GiB)", "TFLOP per cycle", "MFU (%)"]


class Timer:
    """CUDA events on the GPU (no sync until read), perf_counter with a sync on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.spans: list[tuple] = []

    def start(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, begin) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.spans.append((begin, e))
        else:
            self.spans.append((begin, time.perf_counter()))

    def mean_ms(self) -> float:
        if not self.spans:
            return float("nan")
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.spans) / len(self.spans)
        return 1000 * sum(b - a for a, b in self.spans) / len(self.spans)


def synthetic_clips(batch: int, frames: int, res: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B,T,3,H,W) made on the device: a smooth random texture drifting over a static lower half."""
    coarse = torch.rand(batch, 3, res // 8, res // 8, device=device, generator=gen)
    tex = torch.nn.functional.interpolate(coarse, size=(res, 2 * res), mode="bilinear", align_corners=False)
    shift = torch.randint(1, 3, (batch,), device=device, generator=gen)
    cols = (torch.arange(res, device=device)[None, None, :] + shift[:, None, None] *
            torch.arange(frames, device=device)[None, :, None]) % (2 * res)  # (B, T, W)
    idx = cols[:, :, None, None, :].expand(batch, frames, 3, res, res)
    video = torch.gather(tex[:, None].expand(batch, frames, 3, res, 2 * res), 4, idx)
    video[..., res // 2:, :] = video[:, :1, :, res // 2:, :]  # static ground
    return (video * 255).to(torch.uint8)


class GlobalFlopCounter(FlopCounterMode):
    """FlopCounterMode without its per-module tracker, whose backward hooks break `autograd.grad` on leaf inputs
    (the gradient penalty): "A leaf node was passed to _will_engine_execute_node ..." (torch 2.13)."""

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        out = self.mode.__exit__(*args)
        self.mode = None
        return out


def bf16_peak_tflops(device: torch.device) -> float:
    n, iters = (8192, 50) if device.type == "cuda" else (1024, 5)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def build(cfg: Config):
    """The trainer's own set-up (vsyn.train.loop.setup), without checkpoints or logs."""
    rt, ema = setup(cfg, log_dir=None)
    return rt, ema, VideoGANLoss(cfg, rt)


# --precision tokens: the train.precision and loss.penalty_precision they stand for
PRECISIONS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "fp32"), "bf16+penalty": ("bf16", "autocast")}
LAYOUTS = {"nchw": False, "cl": True}  # cl: the critics in channels_last (2D) and channels_last_3d (3D)


def bench_one(name: str, precision: str, layout: str, mode: str, data: str, args: argparse.Namespace,
              peak: float) -> Row:
    preset_name, overrides = preset(name)
    train_precision, penalty_precision = PRECISIONS[precision]
    extra = [f"train.precision={train_precision}", f"loss.penalty_precision={penalty_precision}",
             f"train.compile={mode == 'compiled'}", f"train.cuda_graphs={mode == 'graphed'}",
             f"train.channels_last={LAYOUTS[layout]}",
             f"train.distributed={args.distributed}", *args.set]
    if args.batch:
        extra.append(f"train.batch={args.batch}")
    shards = args.shards if data.startswith("shards") else ""
    if data.startswith("shards") and not shards:
        raise SystemExit("--data shards needs --shards DIR")
    reading = "per_rank" if data == "shards/per-rank" else "global"
    if shards:
        extra += [f"data.train={shards}", f"data.workers={args.workers}", f"data.reading={reading}"]
    cfg = load_config(preset_name, [*overrides, *extra])
    t, m = cfg.train, cfg.model
    rt, ema, loss = build(cfg)
    steps = TrainSteps(cfg, rt, loss)  # the loop's own steps: eager, or captured as CUDA graphs (mode graphed)
    device = rt.device
    rank, world = rt.rank, rt.world_size
    local = t.batch // world  # weak scaling: pass --batch = per-GPU batch x processes
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    gen = torch.Generator(device=device).manual_seed(rank)
    stream = None
    if shards:  # the trainer's own stream: the global batch sliced per rank, or each rank's own reader
        from vsyn.train.loop import _clip_stream, loader_factory

        stream = _clip_stream(cfg, loader_factory(cfg), rt)
        stream.seek(0)

    def batch() -> torch.Tensor:
        clips = stream.next()["video"] if stream else synthetic_clips(local, m.frames, m.resolution, device, gen)
        return clips.to(device, non_blocking=True).float() / 255

    step = 0
    nimg = 0
    d_timer, g_timer = Timer(device), Timer(device)

    def cycle(timed: bool, steps: TrainSteps = steps) -> None:
        nonlocal step, nimg
        for i in range(t.n_critic + 1):
            real = batch()
            rnd = StepRandom(0, step, rank=rank, world=world, local_batch=local, device=device)
            timer = d_timer if i < t.n_critic else g_timer
            begin = timer.start()
            if i < t.n_critic:
                steps.critic(real, rnd, step)
                nimg += t.batch
            else:
                steps.generator(real, rnd)
                ema.update(rt.raw_generator, nimg, t.n_critic * t.batch)
            if timed:
                timer.stop(begin)
            step += 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        cycle(timed=False)
    sync()
    warmup_s = time.perf_counter() - t_warm
    if rank == 0:
        print(f"{name} {precision} {layout} {mode}: {args.warmup} warm-up cycles in {warmup_s:.1f} s"
              " (compilation included)", flush=True)
        for phase, timings in steps.warmup_timings().items():  # graphed: where the warm-up went, per captured phase
            print(f"  {phase}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)
    begin = time.perf_counter()
    for _ in range(args.cycles):
        cycle(timed=True)
    sync()
    elapsed = time.perf_counter() - begin
    ms_d, ms_g = d_timer.mean_ms(), g_timer.mean_ms()
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")

    # FLOPs of one cycle, counted on an eager pass (compiled and CUDA graphs hide their ops from the counter)
    if mode == "compiled":
        torch._dynamo.config.disable = True
    counter = GlobalFlopCounter(display=False)
    with counter:
        cycle(timed=False, steps=TrainSteps(cfg, rt, loss, mode="eager"))
    torch._dynamo.config.disable = False
    flops = counter.get_total_flops()
    cycle_s = elapsed / args.cycles
    clips_per_s = (t.n_critic + 1) * t.batch / cycle_s
    if args.profile:
        profile_cycle(cycle, Path(args.profile) / f"{name}-{precision.replace('+', '_')}-{layout}-{mode}.txt", device)
    if stream:
        stream.close()
    rt.end()
    del steps
    gc.collect()  # the captured graphs (and their memory pools) go with their TrainSteps, which sits in cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(name, precision, layout, mode, data, world, clips_per_s, warmup_s, ms_g, ms_d, peak_gib,
               flops / 1e12, flops / cycle_s / (peak * 1e12))


def profile_cycle(cycle, path: Path, device: torch.device) -> None:
    """One cycle under torch.profiler (bench/profiling.py): its tables written to `path`, the first printed."""
    table = profile_to(path, lambda: cycle(timed=False), device)
    print(f"profile of one cycle -> {path}\n" + "\n".join(table.splitlines()[:22]), flush=True)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="sky128,bair64", help=f"comma list of {', '.join(CONFIGS)} or other presets")
    p.add_argument("--precision", default="fp32,bf16,bf16+penalty",
                   help="comma list of fp32, bf16 (penalties in fp32), bf16+penalty (penalties under autocast too)")
    p.add_argument("--layout", default="nchw", help="comma list of nchw, cl (channels_last / channels_last_3d)")
    p.add_argument("--mode", default="eager,compiled,graphed",
                   help="comma list of eager, compiled (regional torch.compile), graphed (each step a CUDA graph)")
    p.add_argument("--cycles", type=int, default=10, help="timed cycles (n_critic D steps + 1 G step each)")
    p.add_argument("--warmup", type=int, default=3, help="untimed cycles first (compilation, cudnn autotune)")
    p.add_argument("--batch", type=int, default=0, help="override the config's batch (default: its own, 8)")
    p.add_argument("--profile", default="", help="also profile one cycle per row into this directory")
    p.add_argument("--distributed", default="ddp", choices=["ddp", "deepspeed"], help="runtime (one process)")
    p.add_argument("--data", default="", help="comma list of on-device, shards (default: shards if --shards else "
                   "on-device); rows in one process share cuDNN's autotuning")
    p.add_argument("--shards", default="", help="stream clips from these shards (data pipeline included)")
    p.add_argument("--workers", type=int, default=8, help="reader workers with --shards")
    p.add_argument("--reading", default="global", help="comma list of global, per_rank: how --shards rows read "
                   "under several processes (data.reading)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every row (repeatable), e.g. train.cudnn_benchmark_limit=1")
    p.add_argument("--json", default="", help="also write the rows as JSON to this file (rank 0)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    # under torchrun every process benchmarks its own GPU; rank 0 reports (clips/s counts all processes)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = bf16_peak_tflops(device)
    if is_main:
        print(f"{machine()}; measured bf16 matmul peak {peak:.1f} TFLOP/s", flush=True)
    rows: list[Row] = []
    args.data = args.data or ("shards" if args.shards else "on-device")
    readings = args.reading.split(",")
    if not set(readings) <= {"global", "per_rank"}:
        raise SystemExit(f"--reading takes global and/or per_rank, not {args.reading}")
    args.data = ",".join(d if d != "shards" else ",".join("shards" if r == "global" else "shards/per-rank"
                                                          for r in readings) for d in args.data.split(","))
    keys = ("configs", "precision", "layout", "mode", "data")
    for name, precision, layout, mode, data in itertools.product(*(getattr(args, k).split(",") for k in keys)):
        try:
            row = bench_one(name, precision, layout, mode, data, args, peak)
        except torch.cuda.OutOfMemoryError as exc:
            print(f"{name} {precision} {layout} {mode} {data}: out of memory ({exc})", flush=True)
            torch.cuda.empty_cache()
            continue
        except VsynError as exc:  # a combination this machine cannot run (graphed on CPU, cl with DeepSpeed)
            print(f"{name} {precision} {layout} {mode} {data}: skipped ({exc})", flush=True)
            continue
        if not is_main:
            continue
        line = "| " + " | ".join(row.cells()) + " |"
        print(line, flush=True)
        if not args.no_record:  # row by row: a run killed at a time limit keeps the rows it finished
            append_report((report_header(argv, peak) + "\n" if not rows else "") + line)
        rows.append(row)
    if is_main:
        print(markdown(rows))
        if args.json:
            Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    return 0


def report_header(argv: list[str] | None, peak: float) -> str:
    """The section that the rows of one invocation are appended under."""
    return "\n".join([
        f"\n## bench/train.py — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}; measured bf16 matmul peak {peak:.1f} TFLOP/s",
        f"- commit: {commit()}",
        f"- command: `{shlex.join(['python', 'bench/train.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "- clips/s: real clips per second over a cycle of 2 critic steps + 1 generator step, a fresh batch each"
        " step; ms per step from CUDA events; MFU against the measured bf16 peak; 'vs original' divides by the "
        "original implementation's H100 figure; warm-up: seconds of the untimed first cycles (cuDNN "
        "autotuning, CUDA-graph capture, compilation).",
        "",
        markdown([]),
    ])


if __name__ == "__main__":
    sys.exit(main())
