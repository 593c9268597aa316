"""`vsyn train CONFIG [key=value ...]`: train (or resume) a run; exit code 3 means "saved on a signal, requeue me"."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a generator (resumes from the newest checkpoint in the run dir)",
        description="Train under Accelerate (one process, or torchrun / accelerate launch for several). The run dir "
        "(train.run_dir, default runs/<name>) holds config.json, checkpoints/, samples/ and logs/ (train.log, "
        "stats.jsonl, TensorBoard); running the same command again resumes from the newest complete checkpoint, "
        "and settings that shape the model, loss or optimizer must then match it. Ctrl-C saves a checkpoint at "
        "the next step boundary and exits 130 (Ctrl-C again exits at once, without saving); SIGTERM/SIGUSR2 save "
        "and exit 3 so a launcher can requeue the job.",
    )
    p.add_argument("config", help="preset name (tiny-cpu, sky128, bair64), YAML file or run dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.train=shards/ train.batch=16")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsyn.config import load_config
    from vsyn.train import run as train

    return train(load_config(args.config, args.overrides))
