"""What a run leaves in its run dir and how it resumes, in-process on CPU: the first line names the run dir,
logs/train.log keeps the console's lines, one TensorBoard run per run without duplicated steps after a resume,
a final "done" line, a finished run that does not step again, and a changed model refused before anything is
written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainkit import TINY, read_losses
from vsyn.cli import main
from vsyn.config import load_config
from vsyn.errors import VsynError
from vsyn.train import EXIT_DONE, run

pytestmark = pytest.mark.usefixtures("one_thread")

# 4 clips a critic step (0.004 kimg): D D G D -> a checkpoint at step 2 (0.008 kimg) and the final one at step 4
EXTRA = ("data.workers=0", "train.max_steps=4", "train.snapshot_kimg=0.008", "train.tick_kimg=0.004",
         "train.keep_last=5", "train.log_every=1")


def _cfg(run_dir: Path, shards: Path, *extra: str):
    return load_config("tiny-cpu", [f"data.train={shards}", f"train.run_dir={run_dir}", *TINY, *EXTRA, *extra])


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shards) -> tuple[Path, list[str]]:
    """A 4-step run; returns its dir and the vsyn.train lines it logged."""
    run_dir = tmp_path_factory.mktemp("runs") / "four-steps"
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("vsyn.train")
    logger.addHandler(handler)
    try:
        assert run(_cfg(run_dir, shards)) == EXIT_DONE
    finally:
        logger.removeHandler(handler)
    return run_dir, lines


def test_run_dir_holds_train_log_done_line_and_one_tensorboard_run(finished):
    run_dir, lines = finished
    assert lines[0] == f"run dir {run_dir.resolve()} (new run)"
    assert lines[-1].startswith("done: 0.012 kimg, step 4, best: none tracked") and "ckpt-000000004" in lines[-1]
    logged = (run_dir / "logs" / "train.log").read_text().splitlines()
    assert [ln.split("vsyn.train: ", 1)[1] for ln in logged if "vsyn.train: " in ln] == lines  # console lines kept
    assert sum(ln.startswith("kimg ") for ln in lines) == 3  # a tick per critic step: 0.004, 0.008, 0.012
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["four-steps", "stats.jsonl", "train.log"]
    events = list((run_dir / "logs" / "four-steps").iterdir())
    assert len(events) == 1 and events[0].name.startswith("events.out.tfevents.")  # no timestamp-named runs


def test_finished_run_does_not_step_again(finished, shards, caplog):
    run_dir, _ = finished
    before = tree(run_dir)
    with caplog.at_level(logging.INFO, logger="vsyn.train"):
        assert run(_cfg(run_dir, shards)) == EXIT_DONE
    assert tree(run_dir) == before
    assert "already finished at step 4" in caplog.text and "done: 0.012 kimg, step 4" in caplog.text


def test_changed_model_is_refused_before_anything_is_written(finished, shards, capsys):
    run_dir, _ = finished
    before = tree(run_dir)
    with pytest.raises(VsynError) as exc:
        run(_cfg(run_dir, shards, "model.ch_g=8", "loss.kind=hinge", "train.total_kimg=2"))
    message = str(exc.value)
    assert "model.ch_g: 4 -> 8" in message and "loss.kind: 'wgan-gp' -> 'hinge'" in message
    assert "total_kimg" not in message  # allowed, so not named among the refused
    # the command a user types: vsyn train RUN_DIR (its config.json) with a forgotten override
    assert main(["train", str(run_dir), "model.resolution=64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vsyn: error: ") and "model.resolution: 32 -> 64" in err[0]
    assert tree(run_dir) == before  # config.json not rewritten: the next plain resume still works


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_resume_logs_allowed_changes_and_tensorboard_shows_each_step_once(finished, shards, tmp_path, caplog):
    """A kill after step 3 is logged but before its checkpoint: the resumed run logs steps 2 and 3 again, and
    TensorBoard (purge_step) shows each once, with the resumed values -- as stats.jsonl does."""
    src, _ = finished
    run_dir = tmp_path / "four-steps"
    shutil.copytree(src, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "ckpt-000000004")  # what a kill leaves: steps 2-3 logged, ckpt-2 newest
    with caplog.at_level(logging.INFO, logger="vsyn.train"):
        assert run(_cfg(run_dir, shards, "train.max_steps=6", "train.total_kimg=500")) == EXIT_DONE
    assert f"run dir {run_dir.resolve()} (resuming from ckpt-000000002 at kimg 0.008)" in caplog.text
    assert "changed since the checkpoint: train.max_steps: 4 -> 6" in caplog.text
    assert "changed since the checkpoint: train.total_kimg: 1000.0 -> 500.0" in caplog.text
    stats = read_losses(run_dir)
    assert sorted(stats) == list(range(6))
    for tag in ("kimg", "D/loss"):
        shown = _scalars(run_dir / "logs" / "four-steps", tag)
        steps = [s for s, _ in shown]
        assert steps == sorted(set(steps)), f"{tag}: duplicated steps {steps}"
        assert {s: pytest.approx(v) for s, v in shown} == {s: r[tag] for s, r in stats.items() if tag in r}
