"""Cluster profiles: the SLURM resources of a launch, read from `slurm/profiles/<name>.yaml`.

A profile says where and how a job runs (partition, GPUs, CPUs and memory per task, wall time, setup lines);
the run config says what it computes. Every field is documented in `slurm/README.md`; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vsyn.errors import VsynError

PROFILES_ENV = "VSYN_PROFILES"


@dataclass
class Profile:
    name: str = "default"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # None: one task per GPU (1 when there are no GPUs)
    gres: str | None = None  # e.g. "gpu:a100:4"; sent instead of --gpus-per-node when set
    cpus_per_task: int = 1
    mem_per_task_gb: float | None = None  # requested per node as tasks_per_node x this
    time: str = "1:00:00"  # SLURM time: MM, H:MM:SS or D-HH:MM:SS
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: room for a collective save
    max_requeues: int = 20  # preemptions/time limits a job may survive before it is given up
    exclusive: bool = False
    setup: list[str] = field(default_factory=list)  # shell lines run before the tasks (module load ...)
    env: dict[str, str] = field(default_factory=dict)  # exported for every task
    srun_args: list[str] = field(default_factory=list)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other `#SBATCH --key=value`
    python: str | None = None  # command that runs Python in the job (e.g. a container wrapper)

    @property
    def ntasks_per_node(self) -> int:
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node

    @property
    def timeout_min(self) -> int:
        return math.ceil(parse_slurm_time(self.time) / 60)

    def validate(self) -> None:
        for key in ("nodes", "cpus_per_task", "max_requeues"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < (0 if key == "max_requeues" else 1):
                raise VsynError(f"profile '{self.name}': {key} must be a positive integer")
        if self.gpus_per_node < 0 or (self.tasks_per_node is not None and self.tasks_per_node < 1):
            raise VsynError(f"profile '{self.name}': gpus_per_node must be >= 0 and tasks_per_node >= 1")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise VsynError(
                f"profile '{self.name}': one task per GPU — tasks_per_node ({self.tasks_per_node}) must equal "
                f"gpus_per_node ({self.gpus_per_node}) or be left out"
            )
        parse_slurm_time(self.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_slurm_time(value: str) -> int:
    """SLURM's time formats to seconds: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    m = _TIME.match(str(value).strip())
    if not m:
        raise VsynError(f"time {value!r} is not a SLURM time (M, H:MM:SS or D-HH:MM:SS)")
    d, a, b, c = (int(x) if x is not None else None for x in m.group("d", "a", "b", "c"))
    if d is None:
        if b is None:
            return a * 60  # minutes
        if c is None:
            return a * 60 + b  # minutes:seconds
        return a * 3600 + b * 60 + c
    return d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)


def profile_dirs() -> list[Path]:
    """Where profiles are looked up: $VSYN_PROFILES (colon list), ./slurm/profiles, the checkout's own."""
    dirs = [Path(p) for p in os.environ.get(PROFILES_ENV, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "slurm" / "profiles", Path(__file__).resolve().parent.parent / "slurm" / "profiles"]
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.append(d.resolve())
    return seen


def available_profiles() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (searched in `profile_dirs()`) or by path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        found = [d / f"{name_or_path}.yaml" for d in profile_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            raise VsynError(
                f"no profile '{name_or_path}' (available: {', '.join(available_profiles()) or 'none'}; "
                f"searched {', '.join(str(d) for d in profile_dirs()) or 'no profile folder'})"
            )
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VsynError(f"profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise VsynError(f"profile {path} must be a mapping")
    data.setdefault("name", path.stem)
    return profile_from_dict(data, source=str(path))


def profile_from_dict(data: dict[str, Any], source: str = "profile") -> Profile:
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise VsynError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if "time" in data and not isinstance(data["time"], str):
        # YAML reads an unquoted 1:00:00 as the integer 3600 (base 60): refuse rather than guess.
        raise VsynError(f"{source}: quote the time, e.g. time: \"1:00:00\" (got {data['time']!r})")
    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise VsynError(f"{source}: env must be a mapping of NAME: value")
    data = {**data, "env": {str(k): str(v) for k, v in env.items()}}
    for key in ("setup", "srun_args"):
        if not isinstance(data.get(key) or [], list):
            raise VsynError(f"{source}: {key} must be a list of strings")
    profile = Profile(**{k: v for k, v in data.items() if v is not None or k in ("tasks_per_node",)})
    profile.validate()
    return profile


def with_overrides(profile: Profile, **overrides: Any) -> Profile:
    """The profile with the CLI's explicit flags (None means: keep the profile's value)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    updated = dataclasses.replace(profile, **changes)
    updated.validate()
    return updated
