"""`vsyn jobs`: find a launch by run dir or job id, report job states, show per-rank logs, cancel.

States come from `sacct` (falling back to `squeue` while accounting lags a second behind), or for the
LocalExecutor from the controller process and submitit's result files.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.record import RECORD_NAME, LaunchRecord, launches
from vsyn.errors import VsynError

JOB_ID = re.compile(r"^\d+(_\d+)?$")
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "ERROR"}
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "PREEMPTED"}


@dataclass
class Target:
    record: LaunchRecord | None
    job_ids: list[str]


@dataclass
class JobState:
    job_id: str
    state: str
    exit_code: str = ""
    elapsed: str = ""
    nodes: str = ""

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


# ---- finding the launch ---------------------------------------------------------------------------------------


def resolve(target: str) -> Target:
    """A run dir (its newest launch), a launch dir, or a SLURM job id (`123` or `123_4`)."""
    path = Path(target)
    if path.is_dir():
        if (path / RECORD_NAME).is_file():
            record = LaunchRecord.load(path / RECORD_NAME)
            return Target(record, record.job_ids)
        found = launches(path)
        if not found:
            raise VsynError(f"{target} holds no launches (no {path / 'launches' / '*' / RECORD_NAME})")
        return Target(found[-1], found[-1].job_ids)
    if JOB_ID.match(target):
        return Target(_record_for_job(target), [target])
    raise VsynError(f"'{target}' is neither a run directory nor a job id")


def _record_for_job(job_id: str) -> LaunchRecord | None:
    """The launch a job belongs to: via the run dir vsyn puts in the job's comment, else a scan of ./runs."""
    for run_dir in _run_dirs_from_slurm(job_id):
        for record in reversed(launches(run_dir)):
            if _owns(record, job_id):
                return record
    for path in sorted(Path.cwd().glob(f"runs/*/launches/*/{RECORD_NAME}"), reverse=True):
        record = LaunchRecord.load(path)
        if _owns(record, job_id):
            return record
    return None


def _owns(record: LaunchRecord, job_id: str) -> bool:
    base = job_id.split("_")[0]
    return any(j == job_id or j.split("_")[0] == base for j in record.job_ids)


def _run_dirs_from_slurm(job_id: str) -> list[Path]:
    dirs: list[Path] = []
    out = _run(["scontrol", "show", "job", job_id])
    if out is not None and out.returncode == 0:
        dirs += [Path(m) for m in re.findall(r"Comment=vsyn-run=(\S+)", out.stdout)]
    out = _run(["sacct", "-X", "-n", "-P", "-o", "Comment", "-j", job_id])
    if out is not None and out.returncode == 0:
        dirs += [Path(line[len("vsyn-run="):]) for line in out.stdout.split() if line.startswith("vsyn-run=")]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


# ---- states ---------------------------------------------------------------------------------------------------


def states(target: Target) -> list[JobState]:
    if target.record is not None and target.record.executor == "local":
        return [_local_state(target.record, j) for j in target.job_ids]
    return [slurm_state(j) for j in target.job_ids]


def slurm_state(job_id: str) -> JobState:
    out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Elapsed,NodeList", "-j", job_id])
    if out is not None and out.returncode == 0:
        for line in out.stdout.splitlines():
            fields = line.split("|")
            if len(fields) == 5 and fields[0] == job_id:
                return JobState(job_id, fields[1].split()[0], fields[2], fields[3], fields[4])
    out = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%M|%N"])  # accounting lags: ask the controller
    if out is not None and out.returncode == 0 and out.stdout.strip():
        state, elapsed, nodes = (out.stdout.strip().splitlines()[0].split("|") + ["", ""])[:3]
        return JobState(job_id, state, "", elapsed, nodes)
    return JobState(job_id, "UNKNOWN")


def _local_state(record: LaunchRecord, job_id: str) -> JobState:
    result = Path(record.submitit_folder) / f"{job_id}_0_result.pkl"
    if result.is_file():
        try:
            outcome = pickle.loads(result.read_bytes())[0]
        except Exception:  # noqa: BLE001 - a half-written or foreign pickle
            outcome = "error"
        return JobState(job_id, "COMPLETED" if outcome == "success" else "FAILED")
    if not _process_alive(job_id):
        return JobState(job_id, "FAILED", "no result")
    return JobState(job_id, "RUNNING")


def _process_alive(pid: str) -> bool:
    """The local controller is running (a zombie — exited, not yet reaped — counts as gone)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# ---- logs -----------------------------------------------------------------------------------------------------


def rank_logs(record: LaunchRecord, job_id: str) -> list[tuple[int, Path, Path]]:
    """(rank, stdout, stderr) for every rank of a job that has written logs."""
    folder = Path(record.submitit_folder)
    found = []
    for out in sorted(folder.glob(f"{job_id}_*_log.out")):
        rank = out.name[len(job_id) + 1: -len("_log.out")]
        if rank.isdigit():
            found.append((int(rank), out, out.with_name(f"{job_id}_{rank}_log.err")))
    return sorted(found)


def tail_lines(path: Path, n: int) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024 * max(1, n // 50)))
        lines = f.read().decode(errors="replace").splitlines()
    return lines[-n:] if n > 0 else []


def failure_tail(record: LaunchRecord, job_id: str, n: int = 20) -> list[str]:
    """The stderr tail of the rank that failed (the first with a traceback, else the first with any stderr)."""
    logs = rank_logs(record, job_id)
    candidates = [(rank, err) for rank, _, err in logs if err.is_file() and err.stat().st_size]
    for rank, err in candidates:
        if "Traceback" in err.read_text(errors="replace"):
            return [f"--- rank {rank} stderr ({err}) ---", *tail_lines(err, n)]
    if candidates:
        rank, err = candidates[0]
        return [f"--- rank {rank} stderr ({err}) ---", *tail_lines(err, n)]
    return []


_EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Interrupt)\b.*)$")


def failure_summary(lines: list[str]) -> str | None:
    """The last `SomeError: message` line of a stderr tail, without torch's `[rankN]:` prefix."""
    for line in reversed(lines):
        m = _EXCEPTION_LINE.match(line.strip())
        if m and ":" in m.group(1):
            return m.group(1)
    return None


# ---- cancel ---------------------------------------------------------------------------------------------------


def cancel(target: Target) -> list[str]:
    """Cancel the target's jobs that are still queued or running; returns the ids it cancelled."""
    current = states(target)
    todo = [s.job_id for s in current if s.active or s.state == "UNKNOWN"]
    if not todo:
        return []
    if target.record is not None and target.record.executor == "local":
        for job_id in todo:
            try:  # as submitit's LocalJob.cancel: the controller stops its tasks on SIGINT
                os.kill(int(job_id), signal.SIGINT)
            except ProcessLookupError:
                pass
        return todo
    out = _run(["scancel", *todo])
    if out is None or out.returncode != 0:
        raise VsynError(f"scancel {' '.join(todo)} failed: {(out.stderr.strip() if out else 'scancel not found')}")
    return todo
