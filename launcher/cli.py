"""`vsyn launch` and `vsyn jobs`, registered through the `vsyn.commands` entry points in pyproject.toml."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from launcher import jobs as jobs_mod
from launcher.launch import Launch, launch_training, resolve_configs
from launcher.profiles import available_profiles, load_profile, with_overrides
from launcher.record import LaunchRecord
from vsyn.errors import VsynError


class _IntermixedParser(argparse.ArgumentParser):
    """Lets `key=value` overrides follow options (`vsyn launch tiny-cpu --profile local train.batch=4`): plain
    argparse stops filling positionals at the first option."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register_launch(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch",
        help="train on SLURM (or locally) through submitit",
        description="Submit a training run: one task per GPU, preemption-safe, resumable. "
        "Profiles: slurm/profiles/*.yaml (see slurm/README.md).",
    )
    p.add_argument("config", help="preset name, YAML file or run dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--profile", required=True, help=f"cluster profile ({', '.join(available_profiles()) or 'none found'})")
    p.add_argument("--nodes", type=int, help="nodes (overrides the profile)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per node = tasks per node")
    p.add_argument("--tasks-per-node", type=int, help="tasks per node on CPU-only profiles")
    p.add_argument("--time", help="wall time per job, H:MM:SS or D-HH:MM:SS")
    p.add_argument("--partition", help="SLURM partition (overrides the profile)")
    p.add_argument("--account", help="SLURM account to charge (overrides the profile)")
    p.add_argument("--qos", help="SLURM quality of service (overrides the profile)")
    p.add_argument("--local", action="store_true", help="run here with submitit's LocalExecutor (same code path)")
    p.add_argument("--chain", type=int, default=1, metavar="K",
                   help="submit K jobs, each starting after the previous ends (afterany), for runs longer "
                        "than the partition's time limit")
    p.add_argument("--sweep", action="append", default=[], metavar="key=v1,v2,...",
                   help="one run per value (repeat for a grid), submitted as one job array")
    p.add_argument("--wait", action="store_true", help="wait for the jobs to finish; exit 1 if one fails")
    p.set_defaults(func=_launch)
    p.__class__ = _IntermixedParser  # the main parser built it; only its parsing mode changes


def register_jobs(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("jobs", help="status, logs and cancellation of launched runs")
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    s = sub.add_parser("status", help="state of each job of the run's newest launch (stderr tail on failure)")
    s.add_argument("target", metavar="RUN_OR_JOB", help="run dir, launch dir or job id")
    s.set_defaults(func=_status)
    t = sub.add_parser("tail", help="last lines of every rank's stdout and stderr")
    t.add_argument("target", metavar="RUN_OR_JOB", help="run dir, launch dir or job id")
    t.add_argument("-n", "--lines", type=int, default=20, help="lines per stream")
    t.add_argument("--rank", type=int, help="only this rank")
    t.add_argument("--err", action="store_true", help="stderr only")
    t.set_defaults(func=_tail)
    c = sub.add_parser("cancel", help="cancel the run's queued and running jobs")
    c.add_argument("target", metavar="RUN_OR_JOB", help="run dir, launch dir or job id")
    c.set_defaults(func=_cancel)


# ---- handlers -------------------------------------------------------------------------------------------------


def _launch(args: argparse.Namespace) -> int:
    profile = with_overrides(
        load_profile(args.profile),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        tasks_per_node=args.tasks_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
    )
    cfgs = resolve_configs(args.config, args.overrides, args.sweep)
    launch = launch_training(
        cfgs, profile, local=args.local, chain=args.chain, command=_command_line(args)
    )
    where = "locally" if args.local else f"to SLURM ({profile.partition or 'default partition'})"
    for record in launch.records:
        print(
            f"submitted {where}: job {' -> '.join(record.job_ids)}, {profile.nodes} node(s) x "
            f"{profile.ntasks_per_node} task(s); run dir {record.run_dir}"
        )
    print(f"follow with: vsyn jobs status {launch.records[0].run_dir}")
    if not args.wait:
        return 0
    return _wait(launch)


def _command_line(args: argparse.Namespace) -> list[str]:
    """The launch as a command line (rebuilt from the parsed arguments: `main()` may be called in-process)."""
    cmd = ["vsyn", "launch", args.config, "--profile", args.profile]
    for flag in ("nodes", "gpus_per_node", "tasks_per_node", "time", "partition", "account", "qos"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--local"] * args.local + ["--wait"] * args.wait
    cmd += [f"--chain={args.chain}"] * (args.chain != 1)
    for item in args.sweep:
        cmd += ["--sweep", item]
    return cmd + list(args.overrides)


def _wait(launch: Launch, poll_s: float = 2.0) -> int:
    """Wait until every job of the last chain link is finished; print each run's outcome."""
    last = launch.jobs[-1]
    while not all(_finished(job, launch) for job in last):
        time.sleep(poll_s)
    code = 0
    for record in launch.records:
        target = jobs_mod.Target(record, record.job_ids)
        code = max(code, _print_states(target))
    return code


def _finished(job, launch: Launch) -> bool:  # noqa: ANN001 - a submitit Job
    if launch.records[0].executor == "local":
        return job.done()  # polls (and reaps) the controller process
    state = jobs_mod.slurm_state(str(job.job_id))
    return state.state != "UNKNOWN" and not state.active


def _print_states(target: jobs_mod.Target) -> int:
    record = target.record
    if record is not None:
        print(f"run {record.run_dir}  (launch {Path(record.launch_dir).name}, {record.executor})")
    code = 0
    for state in jobs_mod.states(target):
        extra = f" exit {state.exit_code}" if state.exit_code else ""
        extra += f" elapsed {state.elapsed}" if state.elapsed else ""
        extra += f" on {state.nodes}" if state.nodes and state.nodes != "None assigned" else ""
        print(f"  job {state.job_id}: {state.state}{extra}")
        if state.state == "UNKNOWN":
            code = max(code, 1)
        if state.failed:
            code = 1
            if record is not None:
                tail = jobs_mod.failure_tail(record, state.job_id)
                for line in tail:
                    print(f"    {line}")
                summary = jobs_mod.failure_summary(tail)
                if summary:
                    print(f"  job {state.job_id} failed: {summary}")
    return code


def _status(args: argparse.Namespace) -> int:
    target = jobs_mod.resolve(args.target)
    if target.record is None and all(s.state == "UNKNOWN" for s in jobs_mod.states(target)):
        raise VsynError(f"job {args.target} is unknown: neither SLURM (sacct, squeue) nor a launch record under "
                        "./runs knows it; pass its run dir")
    return _print_states(target)


def _tail(args: argparse.Namespace) -> int:
    target = jobs_mod.resolve(args.target)
    if target.record is None:
        raise VsynError(f"no vsyn launch record found for job {args.target}; pass its run dir")
    record: LaunchRecord = target.record
    # The newest job (chain link) that has written logs.
    job_id = next((j for j in reversed(target.job_ids) if jobs_mod.rank_logs(record, j)), target.job_ids[-1])
    logs = jobs_mod.rank_logs(record, job_id)
    if not logs:
        print(f"job {job_id}: no logs yet in {record.submitit_folder}")
        return 0
    for rank, out, err in logs:
        if args.rank is not None and rank != args.rank:
            continue
        streams = [("stderr", err)] if args.err else [("stdout", out), ("stderr", err)]
        for label, path in streams:
            lines = jobs_mod.tail_lines(path, args.lines)
            print(f"==> job {job_id} rank {rank} {label} ({path}) <==")
            for line in lines:
                print(line)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    target = jobs_mod.resolve(args.target)
    cancelled = jobs_mod.cancel(target)
    print(f"cancelled job(s) {', '.join(cancelled)}" if cancelled else "nothing to cancel: no job is queued or running")
    return 0
