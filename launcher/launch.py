"""Submitting work through submitit: training runs (single, chained, swept) and generic job arrays.

Both paths build one `submitit.AutoExecutor` from a profile; `local=True` picks its LocalExecutor (same code,
subprocesses on this machine) instead of SLURM.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import submitit

from launcher.job import DEFAULT_ENTRY, TrainJob
from launcher.profiles import Profile
from launcher.record import LaunchRecord, code_version, new_launch_dir, stamp_fields
from vsyn.config import Config, load_config
from vsyn.errors import VsynError

log = logging.getLogger("launcher")


def executor_parameters(profile: Profile, *, name: str, local: bool) -> dict[str, Any]:
    """AutoExecutor parameters for a profile: the generic ones plus `slurm_*` / `local_*` specifics."""
    setup = [*profile.setup, *(f"export {k}={_shell_quote(v)}" for k, v in profile.env.items())]
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": profile.timeout_min,
        "nodes": profile.nodes,
        "tasks_per_node": profile.ntasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
    }
    if profile.mem_per_task_gb:
        params["mem_gb"] = profile.mem_per_task_gb * profile.ntasks_per_node
    if local:
        if profile.nodes != 1:
            raise VsynError("--local runs on this machine only: use --nodes 1")
        params["gpus_per_node"] = profile.gpus_per_node
        if setup:
            params["local_setup"] = setup
        return params
    if profile.gres:
        params["slurm_gres"] = profile.gres
    elif profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[f"slurm_{key}"] = getattr(profile, key)
    params["slurm_signal_delay_s"] = profile.signal_delay_s
    if profile.exclusive:
        params["slurm_exclusive"] = True
    if setup:
        params["slurm_setup"] = setup
    if profile.srun_args:
        params["slurm_srun_args"] = list(profile.srun_args)
    if profile.sbatch:
        params["slurm_additional_parameters"] = dict(profile.sbatch)
    return params


def check_cluster(timeout_s: float = 30.0) -> None:
    """A SLURM controller answers here: `sbatch` is on PATH and `sinfo` reaches the controller."""
    hint = "use --local to run on this machine, or launch from a node of the cluster (a login node)"
    if shutil.which("sbatch") is None:
        raise VsynError(f"no SLURM here (sbatch is not on PATH); {hint}")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VsynError(f"cannot reach the SLURM controller (sinfo: {exc}); {hint}") from None
    if out.returncode != 0:
        reason = next((ln.strip() for ln in out.stderr.splitlines() if ln.strip()), f"exit {out.returncode}")
        raise VsynError(f"cannot reach the SLURM controller (sinfo: {reason}); {hint}")


def make_executor(folder: Path, profile: Profile, *, name: str, local: bool) -> submitit.AutoExecutor:
    kwargs: dict[str, Any] = {}
    if local:
        kwargs["local_max_num_timeout"] = profile.max_requeues
    else:
        kwargs["slurm_max_num_timeout"] = profile.max_requeues
        if profile.python:
            kwargs["slurm_python"] = profile.python
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="local" if local else "slurm", **kwargs)
    except RuntimeError as exc:  # "Could not detect srun"
        raise VsynError(f"cannot submit to SLURM here ({exc}); use --local or run on a login node") from None
    try:
        executor.update_parameters(**executor_parameters(profile, name=name, local=local))
    except (ValueError, NameError, AssertionError) as exc:
        raise VsynError(f"profile '{profile.name}': {str(exc).splitlines()[0]}") from None
    return executor


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(str(value))


# ---- training -----------------------------------------------------------------------------------------------


def parse_sweep(items: Sequence[str]) -> list[dict[str, str]]:
    """`["optim.lr_g=1e-4,3e-4", "train.seed=0,1"]` -> the cartesian product as override dicts."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise VsynError(f"--sweep {item!r} is not key=v1,v2,...")
        axes.append((key.strip(), vals))
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*(v for _, v in axes))]


def _sweep_suffix(point: dict[str, str]) -> str:
    parts = [f"{key.split('.')[-1]}{value}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def resolve_configs(config: str, overrides: Sequence[str], sweep: Sequence[str] = ()) -> list[Config]:
    """One resolved config per run, with an absolute run dir (jobs may start in another working directory)."""
    base = load_config(config, list(overrides))
    points = parse_sweep(sweep) if sweep else [{}]
    cfgs = []
    for point in points:
        cfg = load_config(config, [*overrides, *(f"{k}={v}" for k, v in point.items())])
        if point:
            cfg.name = f"{base.name}-{_sweep_suffix(point)}"
        cfg.train.run_dir = str(cfg.run_dir.expanduser().resolve())
        cfgs.append(cfg)
    dirs = [c.train.run_dir for c in cfgs]
    if len(set(dirs)) != len(dirs):
        raise VsynError("the sweep's runs share a run dir: keep '{name}' in train.run_dir")
    return cfgs


@dataclass
class Launch:
    records: list[LaunchRecord]
    jobs: list[list[submitit.Job]]  # [chain link][run]


def launch_training(
    cfgs: Sequence[Config],
    profile: Profile,
    *,
    local: bool = False,
    chain: int = 1,
    entry: str = DEFAULT_ENTRY,
    command: Sequence[str] = (),
) -> Launch:
    """Submit each config as a training job (several configs: one job array), `chain` times with `afterany`."""
    if chain < 1:
        raise VsynError("--chain must be >= 1")
    if local and chain > 1:
        raise VsynError("--chain needs SLURM (dependencies); the LocalExecutor runs one job at a time")
    from vsyn.train.resume import plan_resume  # here: the trainer's imports stay out of every `vsyn` start-up

    for cfg in cfgs:
        plan_resume(cfg)  # a run dir's checkpoint refuses a changed model here, before config.json is rewritten
    if not local:
        check_cluster()  # before anything is written
    name = f"vsyn-{cfgs[0].name}" if len(cfgs) == 1 else f"vsyn-sweep-{cfgs[0].name}"
    params = executor_parameters(profile, name=name, local=local)  # refuses a bad profile before any write
    run_dirs = [Path(c.train.run_dir) for c in cfgs]
    created = [d for d in run_dirs if not d.exists()]
    launch_dirs: list[Path] = []
    jobs: list[list[submitit.Job]] = []
    try:
        for cfg, run_dir in zip(cfgs, run_dirs):
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(run_dir / "config.json")
            launch_dirs.append(new_launch_dir(run_dir))
        executor = make_executor(launch_dirs[0] / "submitit", profile, name=name, local=local)
        if not local:
            executor.update_parameters(slurm_comment=f"vsyn-run={run_dirs[0]}")
        _submit_links(executor, cfgs, profile, jobs, chain=chain, entry=entry)
    except BaseException:
        # Refused (or a chain refused half-way): cancel the links already queued, then leave no half-made launch
        # behind -- nor a run dir this launch created.
        for job in (j for link in jobs for j in link):
            job.cancel(check=False)
        for launch_dir in launch_dirs:
            shutil.rmtree(launch_dir, ignore_errors=True)
        for run_dir in created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    folder = launch_dirs[0] / "submitit"

    code = code_version(launch_dirs[0])
    records = []
    for i, (cfg, launch_dir) in enumerate(zip(cfgs, launch_dirs)):
        record = LaunchRecord(
            run_dir=str(run_dirs[i]),
            launch_dir=str(launch_dir),
            submitit_folder=str(folder),
            executor="local" if local else "slurm",
            job_ids=[str(link[i].job_id) for link in jobs],
            profile=profile.to_dict(),
            parameters=params,
            command=list(command) or list(sys.argv),
            code=code,
            chain=chain,
            sweep={"runs": [str(d) for d in run_dirs], "index": i} if len(cfgs) > 1 else None,
            **stamp_fields(),
        )
        record.save()
        records.append(record)
    return Launch(records=records, jobs=jobs)


def _submit_links(
    executor: submitit.AutoExecutor,
    cfgs: Sequence[Config],
    profile: Profile,
    jobs: list[list[submitit.Job]],
    *,
    chain: int,
    entry: str,
) -> None:
    """Submit the runs (one job, or one array for several) `chain` times, each link `afterany` the previous;
    appends each link's jobs to `jobs` as it goes."""
    previous: list[submitit.Job] = []
    for link in range(chain):
        if previous:
            # afterany: the next link starts however this one ended (time limit included).
            executor.update_parameters(slurm_dependency=f"afterany:{_array_id(previous[0])}")
        fns = [
            TrainJob(
                cfg.to_dict(),
                entry=entry,
                max_requeues=profile.max_requeues,
                hand_over_on_timeout=link < chain - 1,
                signal_delay_s=profile.signal_delay_s,
            )
            for cfg in cfgs
        ]
        try:
            submitted = executor.submit_array(fns) if len(fns) > 1 else [executor.submit(fns[0])]
        except submitit.core.utils.FailedJobError as exc:
            raise VsynError(f"sbatch refused the job: {_first_line(exc)}") from None
        jobs.append(submitted)
        previous = submitted


def _array_id(job: submitit.Job) -> str:
    return str(job.job_id).split("_")[0]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    interesting = [line for line in lines if "error" in line.lower()]
    return (interesting or lines or [type(exc).__name__])[-1]


# ---- generic arrays (sharded packing, evaluation) -------------------------------------------------------------


def launch_array(
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    profile: Profile,
    folder: str | Path,
    name: str = "vsyn-array",
    local: bool = False,
) -> list[submitit.Job]:
    """Map a picklable, importable `fn` over argument lists as one job array (`executor.map_array`).

    For sharded packing or evaluation: `launch_array(pack_shard, shard_ids, profile=p, folder=out / "jobs")`.
    Each element runs as one array task with the profile's resources; results come back via `job.result()`.
    A fresh `folder` per call keeps stale results of an earlier cluster's job ids out.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise VsynError(f"array folder {folder} is not empty: use a fresh folder per launch")
    executor = make_executor(folder, profile, name=name, local=local)
    try:
        return executor.map_array(fn, *iterables)
    except submitit.core.utils.FailedJobError as exc:
        raise VsynError(f"sbatch refused the array: {_first_line(exc)}") from None
