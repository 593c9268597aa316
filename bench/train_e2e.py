"""The trainer end to end beside its own step benchmark: clips/s of `vsyn train` (shards, loader workers, EMA,
snapshots, sample sheets, logging) for a fixed number of kimg, next to bench/train.py's step figure at the same
settings, with the trainer's own breakdown of where the wall time went (vsyn/train/timers.py).

Per combination of --gpus x --distributed x --reading it runs, one after the other on the same devices:
  1. bench/train.py (on-device clips, no reader) under torchrun: the step figure;
  2. `vsyn train` under torchrun for --kimg kimg: the run a user makes. Its logs/stats.jsonl carries the breakdown
     of each logging interval; the first --skip-kimg kimg (cuDNN autotuning, CUDA-graph capture, reader start-up)
     are left out of the steady-state figure, and logs/timing.json gives the whole run.
Weak scaling: --batch clips per GPU, and every kimg setting (--kimg, --skip-kimg, snapshots, samples, ticks) per
GPU too, so a run at N GPUs takes the same steps as one at 1 GPU. Efficiency = clips/s at N GPUs / (N x clips/s at
1 GPU) for the same runtime, from a 1-GPU row of this invocation or of --baseline (a --json file of an earlier one).
Any preset works as --config (e.g. a motion-head preset); bench/train.py's names (tiny, bair64, sky128) carry their
overrides.

Units: clips/s counts every real clip a step draws, critic and generator steps alike, as bench/train.py does. The
trainer's progress bar and tick line count kimg = clips shown to the critic (n_critic of every n_critic + 1
steps), which is 2/3 of this figure at n_critic = 2; the table shows both.

  python bench/train_e2e.py --config bair64 --precision bf16+penalty --layout cl --mode graphed \\
      --pack 8192 --workers 6 --kimg 24 --skip-kimg 8 --snapshot-kimg 4 --sample-kimg 16       # one GPU
  python bench/train_e2e.py --config bair64 --precision bf16 --layout nchw --mode eager --gpus 1,4,8 \\
      --distributed ddp,deepspeed --reading global,per_rank --shards DIR --kimg 40 --skip-kimg 12
  python bench/train_e2e.py --config tiny --precision fp32 --mode eager --pack 64 --workers 1 --kimg 0.1 \\
      --skip-kimg 0.02 --snapshot-kimg 0.04 --sample-kimg 0.08 --step-cycles 2 --step-warmup 1       # CPU smoke run

The table is printed and appended with machine, commit and command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import append_report, commit, machine  # noqa: E402  (bench/record.py)
from train import CONFIGS, LAYOUTS, PRECISIONS, preset  # noqa: E402  (bench/train.py)

PHASES = ("data", "step", "ema", "checkpoint", "samples", "metrics", "logging")


@dataclass
class Row:
    config: str
    mode: str
    distributed: str
    reading: str
    gpus: int
    step_clips_per_s: float  # bench/train.py, on-device clips
    step_peak_gib: float
    e2e_clips_per_s: float  # the trainer, steady state
    whole_clips_per_s: float  # the trainer, whole run from the first step (warm-up and final save included)
    process_s: float  # the trainer's process, start to exit
    shares: dict[str, float] = field(default_factory=dict)
    gpu_ms_per_step: float | None = None
    n_critic: int = 2
    efficiency: float | None = None  # filled in when a 1-GPU row of the same kind exists
    step_efficiency: float | None = None

    def cells(self) -> list[str]:
        ratio = self.e2e_clips_per_s / self.step_clips_per_s if self.step_clips_per_s else float("nan")
        critic = self.e2e_clips_per_s * self.n_critic / (self.n_critic + 1)
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        return [self.config, self.mode, self.distributed, self.reading, str(self.gpus),
                f"{self.step_clips_per_s:.2f}", f"{self.e2e_clips_per_s:.2f}", f"{100 * ratio:.1f}%",
                f"{critic:.2f}", f"{self.whole_clips_per_s:.2f}", f"{self.process_s:.0f}", f"{self.step_peak_gib:.2f}",
                *(f"{100 * self.shares.get(p, 0.0):.1f}" for p in PHASES),
                "-" if self.gpu_ms_per_step is None else f"{self.gpu_ms_per_step:.1f}",
                pct(self.step_efficiency), pct(self.efficiency)]


HEADER = ["config", "mode", "runtime", "reading", "processes (GPUs)", "step clips/s (bench/train.py)", "trainer clips/s",
          "trainer / step", "trainer kimg-clips/s (progress bar)", "trainer clips/s, whole run", "trainer process (s)",
          "step peak GPU memory per GPU (GiB)",
          *(f"{p} %" for p in PHASES), "GPU ms per step (trainer)", "step efficiency", "trainer efficiency"]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in rows])


def launcher(gpus: int) -> list[str]:
    """One process, or torchrun with one process per GPU on this host."""
    if gpus == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]


def config_overrides(args: argparse.Namespace, distributed: str, gpus: int) -> list[str]:
    """The trainer's overrides for the settings bench/train.py takes as flags."""
    train_precision, penalty_precision = PRECISIONS[args.precision]
    return [*preset(args.config)[1], f"train.precision={train_precision}", f"loss.penalty_precision={penalty_precision}",
            f"train.channels_last={LAYOUTS[args.layout]}", f"train.cuda_graphs={args.mode == 'graphed'}",
            f"train.compile={args.mode == 'compiled'}", f"train.distributed={distributed}",
            f"train.batch={args.batch * gpus}"]


def run(cmd: list[str], log_path: Path, timeout: float) -> float:
    """Run `cmd` from the repo root with its output in `log_path`; seconds it took. Raises with the log's tail."""
    t0 = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
    return time.perf_counter() - t0


def pack_shards(args: argparse.Namespace, work: Path) -> Path:
    """Procedural shards at the config's size and length (kept between invocations in --work)."""
    from vsyn.config import load_config

    m = load_config(*preset(args.config)).model
    out = work / f"procedural-{m.resolution}px-{m.frames}f-{args.pack}-{args.shard_samples}"
    if not (out / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "vsyn", "shards", "pack", "procedural", str(out), "--clips", str(args.pack),
               "--size", str(m.resolution), "--frames", str(m.frames), "--workers", str(os.cpu_count() or 1),
               "--seed", "0", "--shard-samples", str(args.shard_samples)]
        print(f"packing {args.pack} procedural clips: {shlex.join(cmd)}", flush=True)
        run(cmd, work / "pack.log", timeout=args.timeout)
    return out


def step_figure(args: argparse.Namespace, gpus: int, distributed: str, work: Path) -> tuple[float, float]:
    """bench/train.py's clips/s and peak GPU memory (GiB, per GPU) at these settings."""
    out = work / f"step-{gpus}-{distributed}.json"
    cmd = [*launcher(gpus), str(ROOT / "bench" / "train.py"), "--configs", args.config, "--precision", args.precision,
           "--layout", args.layout, "--mode", args.mode, "--data", "on-device", "--cycles", str(args.step_cycles),
           "--warmup", str(args.step_warmup), "--batch", str(args.batch * gpus), "--distributed", distributed,
           "--no-record", "--json", str(out), *(f"--set={s}" for s in args.set)]
    print(f"step benchmark: {shlex.join(cmd)}", flush=True)
    run(cmd, work / f"step-{gpus}-{distributed}.log", timeout=args.timeout)
    rows = json.loads(out.read_text())
    if not rows:
        raise RuntimeError(f"bench/train.py gave no row (skipped?): see {work}/step-{gpus}-{distributed}.log")
    return float(rows[0]["clips_per_s"]), float(rows[0]["peak_gib"])


def steady_state(run_dir: Path, skip_kimg: float) -> tuple[float, dict[str, float], float | None]:
    """clips/s, phase shares and GPU ms per step over the logging intervals that start after `skip_kimg`."""
    records = [json.loads(line) for line in (run_dir / "logs" / "stats.jsonl").read_text().splitlines() if line]
    timed = [r for r in records if "time/wall_s" in r]
    kept, prev_kimg = [], 0.0
    for r in timed:  # an interval belongs to the window when it starts at or after skip_kimg
        if prev_kimg >= skip_kimg:
            kept.append(r)
        prev_kimg = r["kimg"]
    if not kept:
        raise RuntimeError(f"no logging interval after {skip_kimg} kimg in {run_dir}: raise --kimg")
    wall = sum(r["time/wall_s"] for r in kept)
    clips = sum(r["time/clips_per_s"] * r["time/wall_s"] for r in kept)
    shares = {p: sum(r.get(f"time/{p}", 0.0) * r["time/wall_s"] for r in kept) / wall for p in PHASES}
    gpu = [r["time/gpu_ms_per_step"] for r in kept if "time/gpu_ms_per_step" in r]
    return clips / wall, shares, (sum(gpu) / len(gpu) if gpu else None)


def trainer_run(args: argparse.Namespace, gpus: int, distributed: str, reading: str, shards: Path,
                work: Path) -> Row:
    name = preset(args.config)[0]
    run_dir = work / f"run-{gpus}-{distributed}-{reading}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [*config_overrides(args, distributed, gpus), f"data.train={shards}", f"data.workers={args.workers}",
                 f"data.reading={reading}", f"train.run_dir={run_dir}", f"train.total_kimg={args.kimg * gpus}",
                 f"train.snapshot_kimg={args.snapshot_kimg * gpus}", f"train.sample_kimg={args.sample_kimg * gpus}",
                 f"train.tick_kimg={args.tick_kimg * gpus}", f"train.log_every={args.log_every}",
                 f"train.keep_last={args.keep_last}", "train.trackers=tensorboard", *args.set]
    cmd = [*launcher(gpus), "-m", "vsyn", "train", name, *overrides]
    print(f"trainer: {shlex.join(cmd)}", flush=True)
    process_s = run(cmd, work / f"train-{gpus}-{distributed}-{reading}.log", timeout=args.timeout)
    clips_per_s, shares, gpu_ms = steady_state(run_dir, args.skip_kimg * gpus)
    whole = json.loads((run_dir / "logs" / "timing.json").read_text())
    from vsyn.config import load_config

    n_critic = load_config(name, overrides).train.n_critic
    return Row(args.config, args.mode, distributed, reading, gpus, 0.0, float("nan"), clips_per_s,
               whole["clips"] / whole["wall_s"],
               process_s, shares, gpu_ms, n_critic)


def report_header(argv: list[str], load_before: float) -> str:
    return "\n".join([
        f"\n## bench/train_e2e.py — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average (1 min) "
        f"at the start / at this row: {load_before:.1f} / {os.getloadavg()[0]:.1f} (shared machines: read CPU figures "
        "with this in mind)",
        f"- commit: {commit()}",
        f"- command: `{shlex.join(['python', 'bench/train_e2e.py', *argv])}`",
        "- clips/s count every real clip a step draws (critic and generator steps), as bench/train.py does; the "
        "progress-bar column counts clips shown to the critic (kimg), n_critic/(n_critic+1) of it. Trainer clips/s: "
        "steady state, the logging intervals after --skip-kimg; whole run: from the first step to the end of the "
        "final save. Phase %: the trainer's own breakdown of the steady-state wall time (vsyn/train/timers.py). "
        "Efficiency: clips/s at N GPUs / (N x clips/s at 1 GPU) at the same per-GPU batch.",
        "",
        markdown([]),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bair64", help=f"a preset, or one of bench/train.py's {', '.join(CONFIGS)}")
    p.add_argument("--precision", default="bf16+penalty", choices=sorted(PRECISIONS))
    p.add_argument("--layout", default="cl", choices=sorted(LAYOUTS))
    p.add_argument("--mode", default="graphed", choices=["eager", "compiled", "graphed"])
    p.add_argument("--gpus", default="1", help="comma list of process counts (torchrun on this host for N > 1)")
    p.add_argument("--distributed", default="ddp", help="comma list of ddp, deepspeed")
    p.add_argument("--reading", default="global", help="comma list of global, per_rank (data.reading)")
    p.add_argument("--batch", type=int, default=8, help="clips per GPU per step (global batch = batch x GPUs)")
    p.add_argument("--shards", default="", help="training shards (a directory or manifest)")
    p.add_argument("--pack", type=int, default=0, help="pack this many procedural clips into --work instead")
    p.add_argument("--shard-samples", type=int, default=256, help="clips per packed shard: per-rank readers deal "
                   "whole shards when there are at least GPUs x workers of them")
    p.add_argument("--work", default="", help="scratch directory (runs, logs, packed shards); default a temp dir")
    p.add_argument("--workers", type=int, default=6, help="data.workers (reader processes per rank)")
    p.add_argument("--kimg", type=float, default=24, help="train.total_kimg of each trainer run, per GPU")
    p.add_argument("--skip-kimg", type=float, default=8, help="per GPU, left out of the steady-state figure (warm-up)")
    p.add_argument("--snapshot-kimg", type=float, default=4)
    p.add_argument("--sample-kimg", type=float, default=16)
    p.add_argument("--tick-kimg", type=float, default=4)
    p.add_argument("--log-every", type=int, default=20, help="train.log_every (steps per logging interval)")
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--step-cycles", type=int, default=20, help="bench/train.py --cycles")
    p.add_argument("--step-warmup", type=int, default=3, help="bench/train.py --warmup")
    p.add_argument("--no-step", action="store_true", help="skip the step benchmark (trainer rows only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the step benchmark and the trainer (repeatable)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    p.add_argument("--json", default="", help="also write the rows as JSON to this file")
    p.add_argument("--baseline", default="", help="1-GPU rows for the efficiencies: a --json file of an earlier run")
    p.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    if bool(args.shards) == bool(args.pack):
        raise SystemExit("give --shards DIR or --pack N (procedural clips), one of them")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vsyn-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = Path(args.shards) if args.shards else pack_shards(args, work)
    print(machine(), flush=True)
    load_before = os.getloadavg()[0]

    rows: list[Row] = []
    baseline = [Row(**r) for r in json.loads(Path(args.baseline).read_text())] if args.baseline else []
    steps: dict[tuple[int, str], tuple[float, float]] = {}
    gpus_list = [int(g) for g in args.gpus.split(",")]
    for gpus, distributed, reading in itertools.product(gpus_list, args.distributed.split(","),
                                                        args.reading.split(",")):
        if gpus == 1 and reading == "per_rank" and "global" in args.reading.split(","):
            continue  # one process reads the same either way
        if not args.no_step and (gpus, distributed) not in steps:
            steps[gpus, distributed] = step_figure(args, gpus, distributed, work)
        row = trainer_run(args, gpus, distributed, reading, shards, work)
        row.step_clips_per_s, row.step_peak_gib = steps.get((gpus, distributed), (0.0, float("nan")))
        base = next((r for r in [*rows, *baseline] if r.gpus == 1 and r.distributed == distributed), None)
        if base is not None and gpus > 1:
            row.efficiency = row.e2e_clips_per_s / (gpus * base.e2e_clips_per_s)
            if row.step_clips_per_s and base.step_clips_per_s:
                row.step_efficiency = row.step_clips_per_s / (gpus * base.step_clips_per_s)
        line = "| " + " | ".join(row.cells()) + " |"
        print(line, flush=True)
        if not args.no_record:  # row by row: a run cut off at a time limit keeps what it finished
            append_report((report_header(argv, load_before) + "\n" if not rows else "") + line)
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    print(markdown(rows))
    print(f"logs and runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
