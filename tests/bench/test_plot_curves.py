"""bench/plot_curves.py: every snapshot metric of several runs against kimg in one PNG, with reference lines."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "plot_curves.py"


def _load():
    spec = importlib.util.spec_from_file_location("plot_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(root: Path, scale: float) -> Path:
    (root / "logs").mkdir(parents=True)
    lines = [{"step": s, "kimg": s * 0.008, "D/loss": scale * np.sin(s)} for s in range(30)]
    lines += [{"step": s, "kimg": s * 0.008, "metrics/motion_leak": scale / (1 + s), "metrics/motion_score": 2 - s / 30}
              for s in (9, 19, 29)]
    (root / "logs" / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


def test_plots_every_metric_of_several_runs(tmp_path, capsys):
    plot = _load()
    a, b = _run(tmp_path / "a", 1.0), _run(tmp_path / "b", 0.5)
    ref = tmp_path / "copy.json"
    ref.write_text(json.dumps({"metrics": {"motion_leak": 0.0, "motion_score": 1.5}}))
    out = tmp_path / "curves.png"
    assert plot.main([f"motion={a}", f"style2={b}", "-o", str(out), "--reference", f"copy frame 0={ref}"]) == 0
    assert "2 panels, 2 runs" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 200
        pixels = np.asarray(img.convert("RGB"))
    assert (pixels.std(axis=(0, 1)) > 10).all()  # something was drawn
    runs = [("a", plot.read(a))]
    assert plot.select_keys(["metrics/*"], runs) == ["metrics/motion_leak", "metrics/motion_score"]
    assert plot.select_keys(["D/loss", "metrics/motion_s*"], runs) == ["D/loss", "metrics/motion_score"]
    assert plot.title("metrics/motion_speed_ratio") == "motion_speed_ratio (closer to 1 is better)"
    assert plot.title("metrics/motion_seed_spread") == "motion_seed_spread (diagnostic)"  # no "better" for these
    assert plot.main([str(a), "-o", str(tmp_path / "x.png"), "--keys", "nothing/*"]) == 2
