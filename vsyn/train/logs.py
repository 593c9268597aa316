"""Observability without host syncs in the step: scalars stay on the device until a flush, then one copy.

`ScalarLog` collects each step's detached scalars; `flush` stacks them, averages over ranks (one all-reduce)
and copies once to the host; rank 0 appends them to `logs/stats.jsonl` and the Accelerate trackers
(TensorBoard). `Progress` is the rank-0 bar and tick line: kimg, sec/kimg, clips/s, ETA, GPU memory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from vsyn.train.runtime import Runtime


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


def gpu_memory_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


class Progress:
    """kimg-based progress on rank 0: a tqdm bar plus one StyleGAN-style line per tick."""

    def __init__(self, enabled: bool, total_kimg: float, start_kimg: float) -> None:
        self.enabled = enabled
        self.total_kimg, self.start_kimg = total_kimg, start_kimg
        self.t0 = self.tick_t = time.perf_counter()
        self.tick_kimg = start_kimg
        self.bar = None
        self._last_draw = 0.0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=round(total_kimg, 3), initial=round(start_kimg, 3), unit="kimg", dynamic_ncols=True)

    def update(self, kimg: float, extra: dict[str, Any] | None = None) -> None:
        if not self.bar or time.perf_counter() - self._last_draw < 0.5:
            return
        self._last_draw = time.perf_counter()
        self.bar.n = round(kimg, 3)
        elapsed = time.perf_counter() - self.t0
        done = kimg - self.start_kimg
        sec_per_kimg = elapsed / done if done > 0 else float("nan")
        self.bar.set_postfix(
            {"sec/kimg": f"{sec_per_kimg:.1f}", "clips/s": f"{1000 / sec_per_kimg:.1f}" if done > 0 else "-",
             "gpu_mem_GiB": f"{gpu_memory_gib():.1f}", **(extra or {})},
            refresh=False,
        )
        self.bar.refresh()

    def tick(self, kimg: float, step: int, skipped: int, extra: str = "") -> str:
        now = time.perf_counter()
        dk = kimg - self.tick_kimg
        sec_per_kimg = (now - self.tick_t) / dk if dk > 0 else float("nan")
        eta = (self.total_kimg - kimg) * sec_per_kimg
        line = (
            f"kimg {kimg:9.3f}  step {step:8d}  sec/kimg {sec_per_kimg:8.2f}  clips/s {1000 / sec_per_kimg:8.1f}  "
            f"ETA {eta / 60:7.1f} min  gpu_mem {gpu_memory_gib():6.2f} GiB  skipped {skipped}"
        ) if dk > 0 else f"kimg {kimg:9.3f}  step {step:8d}"
        line += f"  {extra}" if extra else ""
        self.tick_t, self.tick_kimg = now, kimg
        if self.bar:
            self.bar.write(line)
        return line

    def close(self) -> None:
        if self.bar:
            self.bar.close()
