"""Preemption on CPU, in real subprocesses: SIGKILL mid-run (also mid background checkpoint write) then resume is
exact; SIGUSR2 saves and exits 3; Ctrl-C saves and exits 130, a second Ctrl-C exits at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainkit import REPO, read_losses, run_train, scratch_env, train_args, vsyn_cmd

from vsyn.train.checkpoint import find_resume

STEPS = 12
# a checkpoint every critic step (4 clips = 0.004 kimg), so a kill always lands shortly after one
EXTRA = ("loss.kind=wgan-gp", "train.snapshot_kimg=0.004", "train.keep_last=2", "data.workers=1")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shards) -> dict[int, dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_train(run_dir, shards, *EXTRA, f"train.max_steps={STEPS}")
    return read_losses(run_dir)


def _start(run_dir: Path, shards: Path, *extra: str) -> subprocess.Popen:
    """In its own process group, so a signal can reach the DataLoader workers too, as SLURM's does."""
    return subprocess.Popen(vsyn_cmd(*train_args(run_dir, shards, *EXTRA, *extra)), cwd=REPO, env=scratch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the trainer")
        time.sleep(0.05)


def _ckpt_step(run_dir: Path) -> int:
    """Step of the newest complete checkpoint; the trainer renames and prunes concurrently, so retry on a race."""
    for _ in range(10):
        ckpt = find_resume(run_dir)
        if ckpt is None:
            return -1
        try:
            return json.loads((ckpt / "meta.json").read_text())["step"]
        except FileNotFoundError:
            time.sleep(0.05)
    raise AssertionError("checkpoints kept disappearing")


@pytest.mark.slow
def test_sigkill_at_step_k_then_resume_gives_identical_losses(tmp_path, shards, reference):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, shards, f"train.max_steps={STEPS}")
    _wait_for(lambda: _ckpt_step(run_dir) >= 4, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = _ckpt_step(run_dir)
    assert 4 <= killed_at < STEPS, "the kill must land mid-run"
    run_train(run_dir, shards, *EXTRA, f"train.max_steps={STEPS}")
    resumed = read_losses(run_dir)
    assert sorted(resumed) == list(range(STEPS))
    assert resumed == reference  # bit-exact at every step, before and after the kill


@pytest.mark.slow
def test_sigusr2_saves_exits_3_and_resumes_exactly(tmp_path, shards, reference):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, shards, "train.max_steps=100000")
    stats = run_dir / "logs" / "stats.jsonl"
    _wait_for(lambda: stats.is_file() and len(stats.read_text().splitlines()) >= 3, proc)
    os.killpg(proc.pid, signal.SIGUSR2)  # main process and reader workers alike: the workers must ignore it
    assert proc.wait(timeout=120) == 3, proc.stderr.read()[-4000:]
    saved = _ckpt_step(run_dir)
    assert saved >= 3 and (find_resume(run_dir) / "COMPLETE").is_file()
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert sorted(read_losses(run_dir)) == list(range(saved))  # the signal was honoured at a step boundary
    end = min(saved + 3, STEPS) if saved < STEPS else saved + 1
    run_train(run_dir, shards, *EXTRA, f"train.max_steps={end}")
    resumed = read_losses(run_dir)
    assert sorted(resumed) == list(range(end))
    assert {s: resumed[s] for s in reference if s < end} == {s: reference[s] for s in reference if s < end}


# Runs `vsyn train` with the background checkpoint write of step >= BLOCK_AT held up before its snapshot files:
# the marker file says the write is in flight (the rest of the state is already in the temp dir).
_HELD_WRITE = """
import pathlib, sys, time
import vsyn.train.async_checkpoint as ac
mark, block_at = pathlib.Path(sys.argv[1]), int(sys.argv[2])
real = ac.write_snapshot
def held(directory, generator_state, ema_state, cfg, step, kimg, *rest):
    if step >= block_at:
        scratch = mark.with_suffix(".tmp")
        scratch.write_text(str(step))
        scratch.replace(mark)  # atomic: the test never reads a created-but-empty mark
        time.sleep(3600)
    return real(directory, generator_state, ema_state, cfg, step, kimg, *rest)
ac.write_snapshot = held
from vsyn.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigkill_during_a_background_checkpoint_write_keeps_the_previous_one(tmp_path, shards, reference):
    """train.async_checkpoint (the default): the loop trains on while a checkpoint is written; a kill mid-write
    leaves the previous checkpoint complete (the half-written one only as a temp dir) and resuming from it is
    bit-exact."""
    run_dir, mark, block_at = tmp_path / "run", tmp_path / "writing", 5
    cmd = [sys.executable, "-c", _HELD_WRITE, str(mark), str(block_at),
           *train_args(run_dir, shards, *EXTRA, f"train.max_steps={STEPS}")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=scratch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _wait_for(mark.is_file, proc)
    writing = int(mark.read_text())
    stats = run_dir / "logs" / "stats.jsonl"
    # the step after the held save is logged (log_every=1) before the next save waits for the held write
    _wait_for(lambda: _last_logged_step(run_dir) >= writing, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run_dir / "checkpoints" / f".tmp-ckpt-{writing:09d}").is_dir()  # the write the kill interrupted
    previous = _ckpt_step(run_dir)
    assert 0 < previous < writing
    assert (find_resume(run_dir) / "COMPLETE").is_file() and stats.is_file()
    run_train(run_dir, shards, *EXTRA, f"train.max_steps={STEPS}")  # resumes from `previous`
    resumed = read_losses(run_dir)
    assert sorted(resumed) == list(range(STEPS))
    assert resumed == reference
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the stale temp dir was removed


def _last_logged_step(run_dir: Path) -> int:
    try:
        return max(read_losses(run_dir), default=-1)
    except (OSError, ValueError):  # not there yet, or a line being appended
        return -1


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130_and_a_second_ctrl_c_exits_at_once(tmp_path, shards):
    """Ctrl-C reaches the whole foreground process group in a terminal: the trainer and its reader workers."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(vsyn_cmd(*train_args(run_dir, shards, *EXTRA, "train.max_steps=100000")), cwd=REPO,
                            env=scratch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    stats = run_dir / "logs" / "stats.jsonl"
    _wait_for(lambda: stats.is_file() and len(stats.read_text().splitlines()) >= 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-4000:]
    saved = _ckpt_step(run_dir)
    assert (find_resume(run_dir) / "COMPLETE").is_file() and not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert sorted(read_losses(run_dir)) == list(range(saved))  # saved at the step boundary it stopped at
    assert "Ctrl-C: saving a checkpoint at the next step boundary" in err
    assert f"Ctrl-C: saved {run_dir / 'checkpoints' / f'ckpt-{saved:09d}'}" in err
    assert "Traceback" not in err and "Setting accelerator to CPU" not in out + err  # quiet by default

    # Resumed, but with the flag never consulted (no log boundary): only a second Ctrl-C can end it, at once.
    proc = subprocess.Popen(vsyn_cmd(*train_args(run_dir, shards, *EXTRA, "train.max_steps=100000",
                                                 "train.log_every=1000000")),
                            cwd=REPO, env=scratch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(lambda: _ckpt_step(run_dir) >= saved + 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # still going: the first Ctrl-C waits for a step boundary that agrees to stop
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "vsyn: interrupted", err[-4000:]
    assert find_resume(run_dir) is not None  # the newest complete checkpoint is still there to resume from
