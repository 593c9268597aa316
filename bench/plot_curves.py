"""Loss curves from a run's `logs/stats.jsonl` as a dependency-free SVG (one panel per scalar).

    python bench/plot_curves.py RUN_OR_STATS.jsonl [more ...] -o curves.svg --keys D/loss,G/loss,D/wdist_temporal

Each input is one line per run; values are smoothed with an exponential moving average (--smooth) so the trend
of noisy GAN losses is readable; the x axis is kimg.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
W, H, PAD = 420, 220, 44
MAX_POINTS = 400


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


def panel(key: str, series: list[tuple[str, list[float], list[float]]], x0: int, y0: int, smooth: float) -> str:
    ys = [v for _, _, vals in series for v in ema(vals, smooth)]
    xs = [x for _, xv, _ in series for x in xv]
    if not ys:
        return ""
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    xmax = max(xs) or 1

    def pt(x: float, y: float) -> str:
        return f"{x0 + PAD + (W - PAD - 10) * x / xmax:.1f},{y0 + H - PAD + -(H - PAD - 20) * (y - lo) / (hi - lo):.1f}"

    parts = [f'<text x="{x0 + W / 2}" y="{y0 + 14}" text-anchor="middle" font-size="13">{key}</text>',
             f'<rect x="{x0 + PAD}" y="{y0 + 20}" width="{W - PAD - 10}" height="{H - PAD - 20}" fill="none" stroke="#999"/>',
             f'<text x="{x0 + PAD - 4}" y="{y0 + 26}" text-anchor="end" font-size="10">{hi:.3g}</text>',
             f'<text x="{x0 + PAD - 4}" y="{y0 + H - PAD}" text-anchor="end" font-size="10">{lo:.3g}</text>',
             f'<text x="{x0 + W - 10}" y="{y0 + H - PAD + 14}" text-anchor="end" font-size="10">{xmax:.3g} kimg</text>']
    for i, (name, xv, vals) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        every = max(1, len(xv) // MAX_POINTS)  # the smoothed curve loses nothing visible at this density
        smooth_line = " ".join(pt(x, y) for x, y in list(zip(xv, ema(vals, smooth)))[::every])
        parts.append(f'<polyline points="{smooth_line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<text x="{x0 + PAD + 6}" y="{y0 + 34 + 12 * i}" font-size="10" fill="{colour}">{name}</text>')
    return "\n".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="run dirs or stats.jsonl files; NAME=PATH to label one")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--keys", default="D/loss,G/loss,D/wdist_spatial,D/wdist_temporal,D/gp_spatial,D/gp_temporal")
    p.add_argument("--smooth", type=float, default=0.98)
    args = p.parse_args()
    runs = []
    for item in args.inputs:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).stem, "", item)
        runs.append((name, read(Path(path))))
    keys = args.keys.split(",")
    cols = 2
    rows = (len(keys) + cols - 1) // cols
    body = []
    for i, key in enumerate(keys):
        series = [(name, [r["kimg"] for r in recs if key in r], [r[key] for r in recs if key in r]) for name, recs in runs]
        body.append(panel(key, series, (i % cols) * W, (i // cols) * H, args.smooth))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * W}" height="{rows * H}" font-family="sans-serif">'
           f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
    Path(args.output).write_text(svg)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
