"""`vsyn launch` / `vsyn jobs` against a real single-node SLURM (slurm/local-cluster) and submitit's LocalExecutor.

Every training job runs the real trainer (`vsyn.train.run`) with 2 CPU ranks on gloo, tiny model, 24 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_support import LOCAL_CLUSTER, MAX_STEPS, REPO, TINY, job_report, release_requeued, wait_for
from safetensors.torch import load_file

from launcher.jobs import slurm_state
from launcher.launch import launch_array
from launcher.profiles import load_profile, with_overrides
from launcher.record import launches
from vsyn.cli import main

pytestmark = pytest.mark.service

FINAL = f"ckpt-{MAX_STEPS:09d}"


def launch(capsys: pytest.CaptureFixture, run_dir: Path, *extra: str, steps: int = MAX_STEPS) -> tuple[int, str]:
    code = main(["launch", "tiny-cpu", "--profile", "local", f"train.max_steps={steps}",
                 f"train.run_dir={run_dir}", *TINY, *extra])
    return code, capsys.readouterr().out


def vsyn(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def weights(ckpt: Path) -> dict[str, dict]:
    files = sorted(ckpt.rglob("*.safetensors"))
    assert files, f"no weights in {ckpt}"
    return {str(f.relative_to(ckpt)): load_file(f) for f in files}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        for key, tensor in wa[name].items():
            assert tensor.equal(wb[name][key]), f"{name}:{key} differs between {a} and {b}"


def wait_for_first_checkpoint(run_dir: Path, job_id: str) -> None:
    """Until the trainer is in its loop (a complete checkpoint exists); fail at once, with its stderr, if the job did."""

    def ready() -> bool:
        if list((run_dir / "checkpoints").glob("ckpt-*/COMPLETE")):
            return True
        state = slurm_state(job_id)
        if state.failed or state.state == "COMPLETED":
            logs = sorted(run_dir.glob(f"**/{job_id}_*_log.err")) or sorted(run_dir.parent.glob(f"slurm-*-{job_id}.out"))
            tail = "\n".join(logs[0].read_text(errors="replace").splitlines()[-15:]) if logs else "(no logs)"
            raise AssertionError(f"job {job_id} ended ({state.state}) before its first checkpoint:\n{tail}")
        return False

    wait_for(ready, 120, "the first checkpoint", poll=0.1)


def sacct(job_id: str, fields: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", fields, "-j", job_id], capture_output=True, text=True)
    return out.stdout.strip().split("|")


@pytest.fixture(scope="module")
def reference_run(slurm_cluster, shards_url, tmp_path_factory):  # noqa: ANN001
    """An uninterrupted 2-task run, submitted as a chain of 2 jobs (the second finds the run done)."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    code = main(["launch", "tiny-cpu", "--profile", "local", "--chain", "2", "--wait", f"data.train={shards_url}",
                 f"train.max_steps={MAX_STEPS}", f"train.run_dir={run_dir}", *TINY])
    return run_dir, code


def test_local_cluster_start_is_idempotent(slurm_cluster) -> None:
    again = subprocess.run([str(LOCAL_CLUSTER), "start"], env=slurm_cluster, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stdout  # everything was already up
    status = subprocess.run([str(LOCAL_CLUSTER), "status"], env=slurm_cluster, capture_output=True, text=True)
    assert status.returncode == 0 and "slurmdbd: running" in status.stdout
    conf = Path(slurm_cluster["SLURM_CONF"]).read_text()
    assert "EnforcePartLimits=ALL" in conf and f"SlurmctldPort={slurm_cluster['SLURM_CTLD_PORT']}" in conf


@pytest.mark.slow
def test_two_task_training_job_chain(reference_run) -> None:
    run_dir, code = reference_run
    assert code == 0
    (record,) = launches(run_dir)
    assert len(record.job_ids) == 2 and record.executor == "slurm"
    first, second = record.job_ids
    assert sacct(first, "State") == ["COMPLETED"] and sacct(second, "State") == ["COMPLETED"]
    assert sacct(second, "Start")[0] >= sacct(first, "End")[0]  # afterany: the link waited for the first
    # outputs where the run dir says
    assert (run_dir / "checkpoints" / FINAL / "COMPLETE").is_file()
    assert json.loads((run_dir / "config.json").read_text())["train"]["max_steps"] == MAX_STEPS
    assert record.parameters["tasks_per_node"] == 2 and record.profile["name"] == "local"
    assert record.code.get("git_commit") or record.code.get("package_version")
    logs = sorted(Path(record.submitit_folder).glob(f"{first}_*_log.err"))
    assert [p.name for p in logs] == [f"{first}_0_log.err", f"{first}_1_log.err"]
    assert "rank 1/2" in logs[1].read_text()


@pytest.mark.slow
def test_requeued_job_resumes_to_identical_weights(reference_run, shards_url, tmp_path, capsys) -> None:
    ref_dir, _ = reference_run
    run_dir = tmp_path / "requeued"
    code, _ = launch(capsys, run_dir, f"data.train={shards_url}")
    assert code == 0
    job_id = launches(run_dir)[0].job_ids[0]
    wait_for_first_checkpoint(run_dir, job_id)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # SIGTERM: the trainer saves, the job requeues
    release_requeued(job_id)
    wait_for(lambda: slurm_state(job_id).state in ("COMPLETED", "FAILED"), 180, "the resumed job to finish")
    assert slurm_state(job_id).state == "COMPLETED", job_report(job_id)
    show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in show
    rank0 = next(Path(launches(run_dir)[0].submitit_folder).glob(f"{job_id}_0_log.err")).read_text()
    assert ": not requeueing" in rank0  # SLURM was requeueing it already: no second requeue from the job
    assert "restart 1" in rank0
    assert_same_weights(ref_dir / "checkpoints" / FINAL, run_dir / "checkpoints" / FINAL)


def test_cancel_stops_running_job(slurm_cluster, shards_url, tmp_path, capsys) -> None:
    run_dir = tmp_path / "cancelled"
    code, _ = launch(capsys, run_dir, f"data.train={shards_url}", steps=100_000)
    assert code == 0
    job_id = launches(run_dir)[0].job_ids[0]
    # In the loop (signal handlers installed): the trainer saves on the SIGTERM, and the job must not requeue.
    wait_for_first_checkpoint(run_dir, job_id)
    code, out = vsyn(capsys, "jobs", "cancel", str(run_dir))
    assert code == 0 and f"cancelled job(s) {job_id}" in out
    wait_for(lambda: slurm_state(job_id).state == "CANCELLED", 60, "the job to be cancelled")
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip(),
             60, "the job to leave the queue")
    code, out = vsyn(capsys, "jobs", "cancel", job_id)
    assert "nothing to cancel" in out
    assert "Restarts=0" in subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def test_sweep_runs_as_one_job_array(slurm_cluster, shards_url, tmp_path, capsys) -> None:
    code, out = vsyn(capsys, "launch", "tiny-cpu", "--profile", "local", "--tasks-per-node", "1", "--sweep",
                     "train.seed=1,2", "--wait", "train.max_steps=2", f"train.run_dir={tmp_path}/{{name}}",
                     f"data.train={shards_url}", *TINY)
    assert code == 0, out
    runs = [tmp_path / "tiny-cpu-seed1", tmp_path / "tiny-cpu-seed2"]
    ids = [launches(r)[0].job_ids[0] for r in runs]
    assert ids[0].split("_")[0] == ids[1].split("_")[0] and ids[0] != ids[1]  # tasks of one array
    for run, seed in zip(runs, (1, 2)):
        assert json.loads((run / "config.json").read_text())["train"]["seed"] == seed
        assert (run / "checkpoints" / "ckpt-000000002" / "COMPLETE").is_file()
        assert slurm_state(launches(run)[0].job_ids[0]).state == "COMPLETED"


def test_failing_job_surfaces_stderr_tail(slurm_cluster, tmp_path, capsys) -> None:
    run_dir = tmp_path / "failing"
    code, out = launch(capsys, run_dir, "data.train=/nonexistent/train-{000000..000001}.tar", "--wait")
    assert code == 1
    assert f"job {launches(run_dir)[0].job_ids[0]}: FAILED" in out
    assert "failed: vsyn.errors.VsynError: no readable clips" in out
    job_id = launches(run_dir)[0].job_ids[0]
    code, out = vsyn(capsys, "jobs", "status", job_id)  # by job id: found through the job's comment
    assert code == 1 and f"job {job_id}: FAILED" in out and "/nonexistent/train-000000.tar" in out
    code, out = vsyn(capsys, "jobs", "tail", str(run_dir), "--rank", "1", "-n", "5")
    assert code == 0 and f"job {job_id} rank 1 stderr" in out and "rank 0" not in out


def test_job_array_packs_three_shards(slurm_cluster, shards_url, tmp_path) -> None:
    from slurm_tasks import pack_procedural_shard

    profile = with_overrides(load_profile("local"), tasks_per_node=1, time="0:05:00")
    out = tmp_path / "packed"
    jobs = launch_array(pack_procedural_shard, [str(out)] * 3, [0, 1, 2], profile=profile, folder=tmp_path / "jobs",
                        name="pack")
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array
    entries = [j.result() for j in jobs]
    assert [e["name"] for e in entries] == [f"train-{i:06d}.tar" for i in range(3)]
    assert all(e["num_samples"] == 8 for e in entries)
    reference = Path(shards_url.split("train-")[0])
    for e in entries:  # same bytes as packing in-process
        assert (out / e["name"]).read_bytes() == (reference / e["name"]).read_bytes()


@pytest.mark.slow
def test_local_executor_runs_the_same_launch(reference_run, shards_url, tmp_path, capsys) -> None:
    ref_dir, _ = reference_run
    run_dir = tmp_path / "local"
    code, out = launch(capsys, run_dir, f"data.train={shards_url}", "--local", "--wait")
    assert code == 0, out
    (record,) = launches(run_dir)
    assert record.executor == "local" and "COMPLETED" in out
    job_id = record.job_ids[0]
    assert sorted(p.name for p in Path(record.submitit_folder).glob(f"{job_id}_*_log.err")) == [
        f"{job_id}_0_log.err", f"{job_id}_1_log.err"]
    # Same code path, same 2 ranks: the same weights as the SLURM run.
    assert_same_weights(ref_dir / "checkpoints" / FINAL, run_dir / "checkpoints" / FINAL)


@pytest.mark.slow
def test_plain_sbatch_script_requeues_on_usr2(reference_run, shards_url, tmp_path) -> None:
    ref_dir, _ = reference_run
    run_dir = tmp_path / "sbatch-run"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `vsyn` in the job
    submit = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={tmp_path}", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1",
         "--time=10:00", str(REPO / "slurm" / "train.sbatch"), "tiny-cpu", *TINY, f"data.train={shards_url}",
         f"train.max_steps={MAX_STEPS}", f"train.run_dir={run_dir}"],
        env=env, capture_output=True, text=True, check=True,
    )
    job_id = submit.stdout.strip().split(";")[0]
    wait_for_first_checkpoint(run_dir, job_id)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what SLURM sends before the time limit
    release_requeued(job_id)
    wait_for(lambda: slurm_state(job_id).state in ("COMPLETED", "FAILED"), 180, "the resumed job to finish")
    log = next(tmp_path.glob(f"slurm-vsyn-{job_id}.out")).read_text(errors="replace")
    assert slurm_state(job_id).state == "COMPLETED", log[-2000:] + "\n" + job_report(job_id)
    assert f"requeueing job {job_id}" in log and "resumed from" in log
    assert_same_weights(ref_dir / "checkpoints" / FINAL, run_dir / "checkpoints" / FINAL)
