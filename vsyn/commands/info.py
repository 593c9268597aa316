"""`vsyn info CONFIG_OR_CHECKPOINT [--json]`: the networks a config builds and their parameter counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torch import nn

from vsyn.config import Config, load_config
from vsyn.errors import VsynError
from vsyn.nn import build_critics, build_generator, count_params


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show the networks of a config or checkpoint and their parameter counts")
    p.add_argument("source", metavar="CONFIG_OR_CHECKPOINT", help="preset name, YAML file, run/snapshot dir")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=handler)


def describe(cfg: Config) -> dict[str, Any]:
    """Per network: class, integer `params` (trainable) and `params_with_sn_vectors` (the method doc's convention)."""
    try:
        # Built for real on the CPU: on the meta device spectral norm's start-up power iterations are slower.
        generator, critics = build_generator(cfg.model), build_critics(cfg.model)
    except ValueError as exc:  # a size the networks cannot take (e.g. too small for the critics)
        raise VsynError(f"config '{cfg.name}': {exc}") from None
    nets: dict[str, nn.Module] = {
        "generator": generator,
        "spatial_critic": critics.spatial,
        "temporal_critic": critics.temporal,
    }
    return {
        "name": cfg.name,
        "resolution": cfg.model.resolution,
        "frames": cfg.model.frames,
        "head": cfg.model.head,
        "networks": {
            key: {
                "class": type(net).__name__,
                "params": count_params(net),
                "params_with_sn_vectors": count_params(net, with_sn_vectors=True),
            }
            for key, net in nets.items()
        },
    }


def handler(args: argparse.Namespace) -> int:
    source = args.source
    if source.endswith(".safetensors"):  # weights file: its config.json sits beside it
        source = str(Path(source).parent)
    cfg = load_config(source)
    info = describe(cfg)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m = cfg.model
    head = f"motion head ({m.motion_field} field, up to {m.max_speed:g} px/frame)" if m.head == "motion" else "pixel head"
    print(f"{info['name']}: {m.generator} generator, {head}, {m.resolution} px, {m.frames} frames")
    print(f"{'network':<16} {'class':<18} {'params':>12} {'+SN u/v':>12}")
    nets = info["networks"].values()
    for key, net in info["networks"].items():
        print(f"{key:<16} {net['class']:<18} {net['params']:>12,} {net['params_with_sn_vectors']:>12,}")
    total, total_sn = sum(n["params"] for n in nets), sum(n["params_with_sn_vectors"] for n in nets)
    print(f"{'total':<16} {'':<18} {total:>12,} {total_sn:>12,}")
    return 0
