"""Snapshots: the self-describing, code-free export of a generator (safetensors weights + JSON config).

A snapshot directory holds `config.json`, `generator.safetensors`, `generator_ema.safetensors` and `meta.json`.
Full-state training checkpoints are snapshots plus `state/` and a `COMPLETE` marker, so anything that reads a
snapshot also reads a checkpoint. No pickles: loading a snapshot never executes code from the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vsyn.config import Config
from vsyn.errors import VsynError

COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_PREFIX = "ckpt-"  # full-state checkpoints are checkpoints/ckpt-<step>/
WEIGHT_FILES = {True: "generator_ema.safetensors", False: "generator.safetensors"}


def _state_for_safetensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors; clone to plain CPU tensors
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_snapshot(
    directory: str | Path,
    generator: torch.nn.Module,
    generator_ema: torch.nn.Module | None,
    cfg: Config,
    step: int,
    kimg: float,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write a snapshot into `directory` (created; existing weight files are replaced)."""
    return write_snapshot(directory, _state_for_safetensors(generator),
                          _state_for_safetensors(generator_ema or generator), cfg, step, kimg, extra_meta)


def write_snapshot(
    directory: str | Path,
    generator_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    cfg: Config,
    step: int,
    kimg: float,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """`save_snapshot` from state dicts already on the host (a background checkpoint write has no modules)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in generator_state.items()}, str(directory / WEIGHT_FILES[False]))
    save_file({k: v.contiguous() for k, v in ema_state.items()}, str(directory / WEIGHT_FILES[True]))
    cfg.save(directory / "config.json")
    meta = {"step": int(step), "kimg": float(kimg), "generator": cfg.model.generator, "head": cfg.model.head,
            **(extra_meta or {})}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return directory


def is_snapshot(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / WEIGHT_FILES[True]).is_file()


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root` (`ckpt-<step>` with a COMPLETE marker), oldest first. Temp dirs
    (`.tmp-ckpt-*`) are never candidates, even complete ones a kill caught between the marker and the rename."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if d.name.startswith(CHECKPOINT_PREFIX) and (d / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda d: int(d.name[len(CHECKPOINT_PREFIX):]) if d.name[len(CHECKPOINT_PREFIX):].isdigit() else -1)


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete checkpoint under `run_dir/checkpoints`, or None."""
    done = complete_checkpoints(Path(run_dir) / "checkpoints")
    return done[-1] if done else None


def resolve_snapshot(path: str | Path, ema: bool = True) -> tuple[Path, Path]:
    """Map a user path (snapshot dir, run dir, or weights file) to (weights file, config.json)."""
    path = Path(path)
    if not path.exists():
        raise VsynError(f"checkpoint '{path}' does not exist")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise VsynError(f"checkpoint file '{path}' is not a .safetensors file")
        config = path.with_name("config.json")
        if not config.is_file():
            raise VsynError(f"no config.json beside '{path}'")
        return path, config
    if not is_snapshot(path):
        newest = newest_checkpoint(path)
        if newest is None:
            raise VsynError(f"'{path}' is neither a snapshot nor a run directory with a complete checkpoint")
        path = newest
    return path / WEIGHT_FILES[ema], path / "config.json"


def load_state(weights: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise VsynError(f"cannot read weights '{weights}': {exc}") from None


def copy_snapshot(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "meta.json", *WEIGHT_FILES.values()):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
