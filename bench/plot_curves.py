"""Curves from runs' `logs/stats.jsonl` against kimg, several runs in one PNG (one panel per scalar).

    python bench/plot_curves.py motion=runs/motion style2=runs/style2 dvdgan=runs/dvdgan -o curves.png
    python bench/plot_curves.py runs/a runs/b -o losses.png --keys D/loss,G/loss --smooth 0.98
    python bench/plot_curves.py runs/a -o curves.png --reference "copy frame 0=eval-copy-frame0/metrics.json"

--keys takes names or prefixes ending in '*' (default `metrics/*`: every snapshot metric the runs logged). Snapshot
metrics are drawn as measured, point by point; per-step losses are smoothed with an exponential moving average
(--smooth). --reference draws a `vsyn eval` result (metrics.json: copy-frame0, true-clip, ...) as a dashed line.
Panel titles say the unit and which way is better (vsyn.metrics.METRICS).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read(path: Path) -> list[dict]:
    if path.is_dir():
        path = path / "logs" / "stats.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ema(values: list[float], smooth: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else smooth * acc + (1 - smooth) * v
        out.append(acc)
    return out


def labelled(item: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); a bare path is named after itself."""
    if "=" in item:
        name, _, path = item.partition("=")
        return name, path
    return Path(item).name or item, item


def select_keys(patterns: list[str], runs: list[tuple[str, list[dict]]]) -> list[str]:
    present: list[str] = []
    for _, records in runs:
        for r in records:
            present += [k for k in r if k not in ("step", "kimg") and k not in present]
    from vsyn.metrics import METRICS

    order = {f"metrics/{name}": i for i, name in enumerate(METRICS)}  # the metrics in their documented order
    keys: list[str] = []
    for pattern in patterns:
        matched = sorted((k for k in present if fnmatch.fnmatchcase(k, pattern)), key=lambda k: (order.get(k, 1e9), k))
        keys += [k for k in matched if k not in keys]
    return keys


def title(key: str) -> str:
    from vsyn.metrics import METRICS

    info = METRICS.get(key.removeprefix("metrics/"))
    if info is None:
        return key
    unit = f", {info.unit}" if info.unit else ""
    better = "" if info.better in ("reference", "diagnostic") else " is better"  # those two rank nothing
    return f"{key.removeprefix('metrics/')}{unit} ({info.better}{better})"


def plot(runs: list[tuple[str, list[dict]]], keys: list[str], output: Path, smooth: float,
         references: list[tuple[str, dict]], cols: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        for i, (name, records) in enumerate(runs):
            points = [(r["kimg"], r[key]) for r in records if key in r]
            if not points:
                continue
            xs, ys = zip(*points)
            if key.startswith("metrics/"):
                ax.plot(xs, ys, marker="o", markersize=3, color=colours[i % len(colours)], label=name)
            else:
                ax.plot(xs, ema(list(ys), smooth), color=colours[i % len(colours)], label=name)
        for j, (name, metrics) in enumerate(references):
            value = metrics.get(key.removeprefix("metrics/"))
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=1, color="0.3" if j == 0 else "0.6", label=name)
        ax.set_title(title(key), fontsize=9)
        ax.set_xlabel("kimg", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="run dirs or stats.jsonl files; NAME=PATH to label one")
    p.add_argument("-o", "--output", required=True, help="image file (.png; .svg and .pdf work too)")
    p.add_argument("--keys", default="metrics/*", help="comma list of names or shell patterns (default metrics/*)")
    p.add_argument("--smooth", type=float, default=0.98, help="EMA factor for per-step scalars (not for metrics)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=metrics.json",
                   help="a vsyn eval result drawn as a dashed line (repeatable)")
    p.add_argument("--cols", type=int, default=3)
    args = p.parse_args(argv)
    runs = [(name, read(Path(path))) for name, path in map(labelled, args.inputs)]
    references = [(name, json.loads(Path(path).read_text())["metrics"]) for name, path in map(labelled, args.reference)]
    keys = select_keys([k.strip() for k in args.keys.split(",") if k.strip()], runs)
    if not keys:
        print(f"error: no logged scalar matches {args.keys!r}", file=sys.stderr)
        return 2
    out = plot(runs, keys, Path(args.output), args.smooth, references, args.cols)
    print(f"wrote {out} ({len(keys)} panels, {len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
