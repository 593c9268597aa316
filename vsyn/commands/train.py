"""`vsyn train CONFIG [key=value ...]`: train (or resume) a run; exit code 3 means "saved on a signal, requeue me"."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a generator (resumes from the newest checkpoint in the run dir)",
        description="Train under Accelerate (one process, or torchrun / accelerate launch for several). Exits 3 "
        "after saving on SIGTERM/SIGUSR2 so a launcher can requeue the job.",
    )
    p.add_argument("config", help="preset name (tiny-cpu, sky128, bair64), YAML file or run dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.train=shards/ train.batch=16")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsyn.config import load_config
    from vsyn.train import run as train

    return train(load_config(args.config, args.overrides))
