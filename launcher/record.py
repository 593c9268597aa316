"""What every launch leaves in its run directory, so a run can be audited and reproduced later.

    <run_dir>/config.json                       resolved config (the trainer reads and rewrites the same)
    <run_dir>/launches/<launch_id>/launch.json  submission parameters, code version, job ids, command line
    <run_dir>/launches/<launch_id>/code.diff    uncommitted changes, when the checkout was dirty
    <run_dir>/launches/<launch_id>/submitit/    submitit's folder: pickles, sbatch script, per-rank logs
                                                (<job>_<rank>_log.out / .err)

A sweep's runs share one job array, hence one submitit folder: it lives in the first run's launch folder and
every run's launch.json points at it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vsyn.errors import VsynError

RECORD_NAME = "launch.json"


@dataclass
class LaunchRecord:
    run_dir: str
    launch_dir: str
    submitit_folder: str
    executor: str  # "slurm" | "local"
    job_ids: list[str] = field(default_factory=list)  # one per chain link; "A_i" inside a sweep array
    profile: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)  # what submitit got, per executor
    command: list[str] = field(default_factory=list)
    code: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    host: str = ""
    user: str = ""
    chain: int = 1
    sweep: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return Path(self.launch_dir) / RECORD_NAME

    def save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: str | Path) -> "LaunchRecord":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise VsynError(f"cannot read launch record {path}: {exc}") from None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def new_launch_dir(run_dir: Path) -> Path:
    """A fresh folder per launch: SLURM job ids restart at 1 on a wiped cluster, and submitit would read a stale
    result file of an earlier job with the same id if folders were reused."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = run_dir / "launches" / f"{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True)
    return path


def launches(run_dir: Path) -> list[LaunchRecord]:
    """The run's launches, oldest first."""
    return [LaunchRecord.load(p) for p in sorted((run_dir / "launches").glob(f"*/{RECORD_NAME}"))]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (write) the index of a checkout others commit in.
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        out = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version(launch_dir: Path | None = None) -> dict[str, Any]:
    """Git commit and dirty flag of the checkout vsyn runs from, or the installed package version.

    When dirty and `launch_dir` is given, the uncommitted diff is saved beside the record as `code.diff`.
    """
    import vsyn

    info: dict[str, Any] = {"package_version": vsyn.__version__}
    src = Path(vsyn.__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], src)
    if commit is None:
        return info
    status = _git(["status", "--porcelain", "--untracked-files=no"], src) or ""
    info.update(git_commit=commit.strip(), git_dirty=bool(status.strip()), git_root=str(src))
    if info["git_dirty"] and launch_dir is not None:
        diff = _git(["diff", "HEAD"], src)
        if diff:
            (launch_dir / "code.diff").write_text(diff)
            info["diff"] = "code.diff"
    return info


def stamp_fields() -> dict[str, str]:
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "user": os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid()),
    }
