"""Observability without host syncs in the step: scalars stay on the device until a flush, then one copy.

`ScalarLog` collects each step's detached scalars; `flush` stacks them, averages over ranks (one all-reduce)
and copies once to the host; rank 0 appends them to `logs/stats.jsonl` and the Accelerate trackers
(TensorBoard). `Progress` is the rank-0 bar and tick line: kimg, sec/kimg, clips/s, ETA, GPU memory.
`run_log` copies vsyn's log lines (start-up, resume, ticks, metrics, the final "done" line) to `logs/train.log`;
`start_trackers` opens one TensorBoard run named after the run dir, continuing it on resume without duplicates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from vsyn.config import Config
from vsyn.train.runtime import Runtime

log = logging.getLogger("vsyn.train")
TRAIN_LOG = "train.log"


class ScalarLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: list[tuple[int, float, dict[str, torch.Tensor]]] = []

    def add(self, step: int, nimg: int, stats: dict[str, torch.Tensor | float]) -> None:
        self.rows.append((step, nimg / 1000, {k: torch.as_tensor(v) for k, v in stats.items()}))

    def annotate_last(self, values: dict[str, float]) -> None:
        """Add scalars to the newest step's record (the loop's time breakdown of the interval it ends)."""
        if self.rows:
            self.rows[-1][2].update({k: torch.as_tensor(v) for k, v in values.items()})

    def truncate_after(self, step: int) -> None:
        """Drop records a killed run wrote past the checkpoint we resume from, so each step appears once."""
        if self.path and self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            self.path.write_text("".join(ln + "\n" for ln in keep))

    def flush(self, rt: Runtime) -> list[dict[str, Any]]:
        """Collective. Returns the records (rank-averaged), written by rank 0."""
        if not self.rows:
            return []
        names = sorted({k for _, _, s in self.rows for k in s})
        nan = torch.tensor(float("nan"), device=rt.device)
        table = torch.stack(
            [torch.stack([s[k].to(rt.device, torch.float32) if k in s else nan for k in names]) for *_, s in self.rows]
        )
        values = rt.mean(table).tolist()  # the one host sync per flush
        records = []
        for (step, kimg, _), row in zip(self.rows, values):
            rec: dict[str, Any] = {"step": step, "kimg": kimg}
            rec.update({k: v for k, v in zip(names, row) if not math.isnan(v)})
            records.append(rec)
        self.rows.clear()
        if rt.is_main:
            if self.path:
                with self.path.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in records)
            for r in records:
                rt.acc_g.log({k: v for k, v in r.items() if k != "step"}, step=r["step"])
        return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One more line of stats.jsonl (snapshot metrics: `metrics/<name>` keys beside step and kimg)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def gpu_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


class Progress:
    """kimg-based progress on rank 0: a tqdm bar plus one StyleGAN-style line per tick, logged (console and
    logs/train.log). Log lines go through tqdm while the bar is open, so they never break it."""

    def __init__(self, enabled: bool, total_kimg: float, start_kimg: float) -> None:
        self.enabled = enabled
        self.total_kimg, self.start_kimg = total_kimg, start_kimg
        self.t0 = self.tick_t = time.perf_counter()
        self.tick_kimg = start_kimg
        self.bar = None
        self._redirect: contextlib.ExitStack | None = None
        self._last_draw = 0.0
        if enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            total = round(max(total_kimg, start_kimg), 3)
            self.bar = tqdm(total=total, initial=round(start_kimg, 3), unit="kimg", dynamic_ncols=True)
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())

    def _show(self, kimg: float) -> None:
        assert self.bar is not None
        if kimg > self.bar.total:  # the last step overshoots total_kimg by up to one batch
            self.bar.total = round(kimg, 3)
        self.bar.n = round(kimg, 3)

    def update(self, kimg: float, extra: dict[str, Any] | None = None) -> None:
        if not self.bar or time.perf_counter() - self._last_draw < 0.5:
            return
        self._last_draw = time.perf_counter()
        self._show(kimg)
        elapsed = time.perf_counter() - self.t0
        done = kimg - self.start_kimg
        sec_per_kimg = elapsed / done if done > 0 else float("nan")
        postfix = {"sec/kimg": f"{sec_per_kimg:.1f}", "clips/s": f"{1000 / sec_per_kimg:.1f}" if done > 0 else "-"}
        if (mem := gpu_memory_gib()) is not None:
            postfix["gpu_mem_GiB"] = f"{mem:.1f}"
        self.bar.set_postfix({**postfix, **(extra or {})}, refresh=False)
        self.bar.refresh()

    def tick(self, kimg: float, step: int, skipped: int, extra: str = "") -> str:
        now = time.perf_counter()
        dk = kimg - self.tick_kimg
        sec_per_kimg = (now - self.tick_t) / dk if dk > 0 else float("nan")
        eta = max(0.0, self.total_kimg - kimg) * sec_per_kimg
        mem = gpu_memory_gib()
        line = (
            f"kimg {kimg:9.3f}  step {step:8d}  sec/kimg {sec_per_kimg:8.2f}  clips/s {1000 / sec_per_kimg:8.1f}  "
            f"ETA {eta / 60:7.1f} min  " + (f"gpu_mem {mem:6.2f} GiB  " if mem is not None else "") +
            f"skipped {skipped}"
        ) if dk > 0 else f"kimg {kimg:9.3f}  step {step:8d}"
        line += f"  {extra}" if extra else ""
        self.tick_t, self.tick_kimg = now, kimg
        if self.bar:
            self._show(kimg)
        log.info(line)
        return line

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None


@contextlib.contextmanager
def run_log(log_dir: Path | None) -> Iterator[None]:
    """While training: vsyn's log lines (INFO and up) also go to `log_dir/train.log`, appended across resumes.
    None (ranks other than 0): nothing."""
    if log_dir is None:
        yield
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / TRAIN_LOG, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    root = logging.getLogger("vsyn")
    previous = root.level
    if root.getEffectiveLevel() > logging.INFO:  # a library user's quiet root must not starve the file
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def tracker_names(cfg: Config) -> list[str]:
    return [n.strip() for n in cfg.train.trackers.split(",") if n.strip()]


def start_trackers(rt: Runtime, cfg: Config, step: int) -> None:
    """One tracker run per training run, named after the run dir. TensorBoard: resumed at `step` with
    `purge_step`, which tells TensorBoard to drop what a killed run logged past its checkpoint (each step shows
    once); the config goes in as text, not as hparams (Accelerate writes those as extra timestamp-named runs)."""
    names = tracker_names(cfg)
    if not names:
        return
    init_kwargs = {"tensorboard": {"purge_step": step}} if step > 0 else {}
    rt.acc_g.init_trackers(cfg.run_dir.name, config=None, init_kwargs=init_kwargs)
    if not rt.is_main:
        return
    for tracker in rt.acc_g.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_text("config", f"```json\n{cfg.to_json()}\n```", global_step=step)
        else:
            tracker.store_init_configuration(_flat(cfg.to_dict()))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def done_line(nimg: int, step: int, best: dict[str, Any] | None, checkpoint: Path | None, cfg: Config) -> str:
    """The last line of a finished run."""
    if best:
        best_text = f"best {best['metric']} {best['value']:.4g} at step {best['step']} (checkpoints/best-{best['metric']})"
    elif cfg.eval.best_metric:
        best_text = f"best {cfg.eval.best_metric}: not measured yet"
    else:
        best_text = "best: none tracked (set eval.metrics and eval.best_metric)"
    where = f"; newest checkpoint {checkpoint}" if checkpoint is not None else ""
    return f"done: {nimg / 1000:.3f} kimg, step {step}, {best_text}{where}"
