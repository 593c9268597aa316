"""The callable that runs in every task of a training job: set up torch.distributed, call the trainer, requeue.

Division of labour on preemption and time limits (SIGTERM / SIGUSR2, sent to every task):
- the trainer (`vsyn.train.run`) catches the signal, saves a checkpoint collectively at the next step boundary
  that all ranks agree on, and returns `EXIT_REQUEUE`;
- this callable then requeues the job from global rank 0 (`scontrol requeue`, or the LocalExecutor's requeue
  exit code). The requeued job calls the trainer again, which resumes from the newest complete checkpoint.
- submitit's own hook (`checkpoint()`, run by rank 0 only if a signal lands before the trainer has installed
  its handlers) also only requeues: all state lives in the run directory, never in the pickle.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import zlib
from typing import Any, Callable

import submitit
from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

from vsyn.config import config_from_dict

log = logging.getLogger("launcher.job")

DEFAULT_ENTRY = "vsyn.train:run"
DEFAULT_EXIT_REQUEUE = 3  # vsyn.train.EXIT_REQUEUE; read from the entry's module when it defines it


def resolve_entry(entry: str) -> tuple[Callable[[Any], int], int]:
    """`module:function` to the function and the module's EXIT_REQUEUE."""
    module_name, _, attr = entry.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr or "run"), int(getattr(module, "EXIT_REQUEUE", DEFAULT_EXIT_REQUEUE))


def master_port(seed: str) -> int:
    """A port every rank derives alike. submitit seeds its choice with the job id alone, so two clusters on one
    host (ids restart at 1) would collide; the submitit folder is unique per launch."""
    return 20000 + zlib.crc32(seed.encode()) % 30000


def export_distributed() -> submitit.helpers.TorchDistributedEnvironment:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from SLURM (or the LocalExecutor). All GPUs stay visible:
    the trainer (DeepSpeed too) picks its device with LOCAL_RANK."""
    env = submitit.helpers.TorchDistributedEnvironment()
    job_env = submitit.JobEnvironment()
    env.master_port = master_port(f"{os.environ.get('SUBMITIT_FOLDER', '')}:{job_env.job_id}")
    return env.export(set_cuda_visible_devices=False, overwrite=True)


def time_left_s() -> float | None:
    """Seconds before the SLURM job's time limit (None outside SLURM or when unknown)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    if out.returncode != 0 or not text or text in ("UNLIMITED", "INVALID", "NOT_SET"):
        return None
    from launcher.profiles import parse_slurm_time

    try:
        return float(parse_slurm_time(text if "-" in text or text.count(":") == 2 else f"0:{text}"))
    except Exception:  # noqa: BLE001 - an unparsable answer just means "unknown"
        return None


def slurm_job_state(job_id: str) -> str:
    """The controller's JobState of a job ("" when it cannot be asked)."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field[len("JobState="):]
    return ""


def requeue_current_job(max_requeues: int) -> None:
    """Put this job back in the queue and leave without a result, so submitit keeps waiting for the next run."""
    env = submitit.JobEnvironment()
    if env.cluster == "local":
        log.info("requeueing local job %s", env.job_id)
        sys.exit(LOCAL_REQUEUE_RETURN_CODE)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= max_requeues:
        raise RuntimeError(f"job {env.job_id} was already requeued {restarts} times (max_requeues); giving up")
    job_id = env.job_id  # "A_i" for an array task: requeue only that task
    state = slurm_job_state(job_id)
    if state != "RUNNING":
        # Only a RUNNING job asked for its own requeue (time limit, preemption signal). Otherwise the SIGTERM came
        # from `scancel` (CANCELLED, which must win: SLURM would requeue even a cancelled job) or from a requeue
        # already under way (`scontrol requeue`, preemption: COMPLETING / PENDING / REQUEUED).
        log.info("job %s is %s: not requeueing", job_id, state)
        sys.exit(0)
    log.info("requeueing SLURM job %s (restart %d)", job_id, restarts + 1)
    out = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:  # e.g. the job ended between the state check and the requeue
        log.warning("scontrol requeue %s: %s", job_id, out.stderr.strip())
    sys.exit(0)


def _leave_process_group() -> None:
    """A gloo process group still alive at interpreter exit can abort the process after the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _exit_without_teardown() -> None:
    """Once submitit has written this task's success result, leave without interpreter teardown.

    Torch's C++ background threads can abort a process during teardown ("terminate called without an active
    exception"; ~1 gloo run in 20 here, even after destroy_process_group), which turns a finished job into a
    FAILED one. Nothing is lost by skipping it: the result and the checkpoints are on disk.
    """
    try:
        outcome = pickle.loads(submitit.JobEnvironment().paths.result_pickle.read_bytes())[0]
    except Exception:  # noqa: BLE001 - no result (or unreadable): exit the normal way
        return
    if outcome == "success":
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _log_to_stderr(rank: int) -> None:
    """The launcher's own lines go to the rank's stderr log, tagged with the rank."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class TrainJob(submitit.helpers.Checkpointable):
    """Runs `entry(cfg)` (default `vsyn.train.run`) in each task; picklable, holds only the resolved config."""

    def __init__(
        self,
        config: dict[str, Any],
        entry: str = DEFAULT_ENTRY,
        max_requeues: int = 20,
        hand_over_on_timeout: bool = False,
        signal_delay_s: int = 120,
    ) -> None:
        self.config = config
        self.entry = entry
        self.max_requeues = max_requeues
        # In a chain every link but the last hands over to the next link at its time limit instead of requeueing:
        # the next link has been queued (and gathering priority) since the launch.
        self.hand_over_on_timeout = hand_over_on_timeout
        self.signal_delay_s = signal_delay_s

    def __call__(self) -> dict[str, Any]:
        dist = export_distributed()
        _log_to_stderr(dist.rank)
        log.info(
            "rank %d/%d local_rank %d master %s:%s restart %s",
            dist.rank, dist.world_size, dist.local_rank, dist.master_addr, dist.master_port,
            os.environ.get("SLURM_RESTART_COUNT", "0"),
        )
        run, exit_requeue = resolve_entry(self.entry)
        cfg = config_from_dict(self.config)
        try:
            code = run(cfg)
        finally:
            _leave_process_group()
        if code == 0:
            atexit.register(_exit_without_teardown)
            return {"status": "done", "run_dir": str(cfg.run_dir), "rank": dist.rank}
        if code != exit_requeue:
            raise RuntimeError(f"trainer {self.entry} returned exit code {code}")
        # The trainer has saved. Stop listening: a second signal must not start submitit's own requeue as well.
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        if self.hand_over_on_timeout:
            left = time_left_s()
            if left is not None and left <= self.signal_delay_s + 60:
                log.info("time limit reached (%.0f s left): handing over to the next job of the chain", left)
                atexit.register(_exit_without_teardown)
                return {"status": "handed-over", "run_dir": str(cfg.run_dir), "rank": dist.rank}
        if dist.rank == 0:
            requeue_current_job(self.max_requeues)
        sys.exit(0)  # other ranks: leave no result; rank 0's requeue ends this run of the job

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """submitit's hook (rank 0, on SIGUSR2): requeue the same callable. The trainer saves on the signal itself."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
