"""The one-pass evaluator with small random detectors on procedural clips: oracle and copy-frame-0 generators,
the real-statistics cache, errors, directions, and the distributed path (2 gloo ranks == 1 process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vsyn.errors import VsynError
from vsyn.metrics import METRICS, EvalSettings, evaluate, run_snapshot_metrics, selection_score
from vsyn.metrics.utils import copy_first_frame

from .helpers import Oracle, TinyImageDetector, TinyVideoDetector, loader_from, procedural_clips

pytest.importorskip("shards.procedural")
NAMES = ["fvd16", "fid", "psnr", "ssim", "motion"]


@pytest.fixture(scope="module")
def clips():
    return procedural_clips(8, 32, 17)


def settings(tmp_path, n=8, frames=17, **kw) -> EvalSettings:
    return EvalSettings(n=n, batch=4, cache_dir=str(tmp_path / "cache"), frames=frames,
                        detectors={"i3d-videogpt": TinyVideoDetector(), "inception-fid": TinyImageDetector()},
                        detector_sha256={"i3d-videogpt": "a" * 64, "inception-fid": "b" * 64},
                        protocol_overrides={"resize": "none", "size": 32}, **kw)


def test_oracle_generator_scores_perfectly(clips, tmp_path):
    values, cards = evaluate(Oracle(clips), loader_from(clips), NAMES, "mem://procedural", settings(tmp_path))
    assert abs(values["fvd16"]) < 1e-6 and abs(values["fid"]) < 1e-6  # float64 cancellation of equal traces
    assert values["psnr"] == 100.0 and values["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert values["motion_leak"] == 0.0 and values["motion_static_change"] == 0.0
    assert values["motion_speed_ratio"] == 1.0 and values["motion_epe"] == values["motion_floor_epe"]
    card = cards["fvd16"].to_dict()
    assert card["protocol"]["n"] == 8 and card["protocol"]["start"] == 1 and card["detector_sha256"] == "a" * 64
    assert card["result"]["n_generated_rows"] == 8
    assert cards["fid"].result["n_generated_rows"] == 8 * 16  # 16 generated frames per clip, frame 0 excluded


def test_copy_first_frame_and_cache(clips, tmp_path):
    s = settings(tmp_path)
    first, _ = evaluate(copy_first_frame, loader_from(clips), NAMES, "mem://procedural", s)
    assert first["fvd16"] > 1e-3 and first["fid"] > 1e-5 and first["psnr"] < 100  # > the ~1e-8 floor of the oracle
    assert first["motion_speed_ratio"] < 1e-4 and first["motion_leak"] == 0.0
    cached = sorted((tmp_path / "cache").glob("*.npz"))
    assert [p.name.split("-")[0] for p in cached] == ["fid", "fvd16"]
    card = json.loads(str(np.load(cached[1])["card"]))
    assert card["protocol"]["name"] == "fvd16"
    # Second run: real statistics come from the cache. Poison the cached real mean to prove it is what is used.
    with np.load(cached[1]) as z:
        poisoned = {k: z[k] for k in z.files}
    poisoned["mu"] = poisoned["mu"] + 1.0
    np.savez(cached[1], **poisoned)
    again, _ = evaluate(copy_first_frame, loader_from(clips), NAMES, "mem://procedural", s)
    assert again["fid"] == first["fid"] and again["psnr"] == first["psnr"]
    assert again["fvd16"] != pytest.approx(first["fvd16"])  # the cached (poisoned) statistics were used
    other, _ = evaluate(copy_first_frame, loader_from(clips), NAMES, "mem://other-data", s)  # other data: new key
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4 and other["fvd16"] == pytest.approx(first["fvd16"])


def test_too_few_clips_is_an_error(clips, tmp_path):
    with pytest.raises(VsynError, match="only 8 clips"):
        evaluate(copy_first_frame, loader_from(clips), ["psnr"], "mem://x", settings(tmp_path, n=16))


def test_short_clips_are_an_error(tmp_path):
    short = procedural_clips(4, 32, 9)
    with pytest.raises(VsynError, match="need 17"):
        evaluate(copy_first_frame, loader_from(short), ["fvd16"], "mem://x", settings(tmp_path, n=4))


def test_unknown_metric(tmp_path, clips):
    with pytest.raises(VsynError, match="unknown metric"):
        evaluate(copy_first_frame, loader_from(clips), ["fvd17"], "mem://x", settings(tmp_path))


def test_selection_directions():
    assert selection_score("fvd16", 100.0) == 100.0
    assert selection_score("psnr", 30.0) == -30.0 and selection_score("ssim", 0.9) == -0.9
    assert selection_score("motion", 0.5) == 0.5 == selection_score("motion_score", 0.5)
    # speed ratio: 1 is right, and half as fast is as wrong as twice as fast
    assert selection_score("motion_speed_ratio", 1.0) == 0.0
    assert selection_score("motion_speed_ratio", 0.5) == pytest.approx(selection_score("motion_speed_ratio", 2.0))
    assert selection_score("motion_speed_ratio", 0.0) == float("inf")
    assert METRICS["motion_speed_ratio"].better == "closer to 1" and not METRICS["motion_speed_ratio"].lower_is_better
    with pytest.raises(VsynError, match="describes the data"):
        selection_score("motion_floor_epe", 0.3)
    assert all(isinstance(m.lower_is_better, bool) for m in METRICS.values())


class Recording:
    """copy_first_frame that records how many frames it was asked for."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def __call__(self, images, num_frames):
        self.asked.append(num_frames)
        return copy_first_frame(images, num_frames)


def test_metrics_cover_the_whole_clip_whatever_the_set(clips, tmp_path):
    """PSNR/SSIM/motion use frames 1..T-1 (T = 9 here) whether or not FVD/FID (17 frames) are asked for."""
    video = np.stack([c["video"] for c in clips]).astype(np.float64) / 255  # (B, T, H, W, 3)
    mse = ((video[:, 1:9] - video[:, :1]) ** 2).mean(axis=(2, 3, 4))
    expected = float((10 * np.log10(1 / mse)).mean())
    assert expected != pytest.approx(float((10 * np.log10(1 / mse[:, :1])).mean()))  # frame 1 alone differs
    results = {}
    for names in (["psnr"], ["psnr", "fvd16"], ["motion", "psnr"], ["fid", "motion", "psnr"]):
        gen = Recording()
        values, _ = evaluate(gen, loader_from(clips), names, "mem://procedural", settings(tmp_path, frames=9))
        assert values["psnr"] == pytest.approx(expected, rel=1e-12), names
        assert set(gen.asked) == {17 if {"fvd16", "fid"} & set(names) else 9}
        results[tuple(names)] = values
    assert results[("motion", "psnr")]["motion_epe"] == results[("fid", "motion", "psnr")]["motion_epe"]


def test_run_snapshot_metrics_with_a_generator_module(clips, tmp_path):
    from vsyn.config import load_config
    from vsyn.nn import build_generator

    from vsyn.metrics.motion import KEYS

    cfg = load_config("tiny-cpu")  # latent noise: stochastic, so motion draws K samples per clip
    gen = build_generator(cfg.model).train()
    s = settings(tmp_path, n=4, frames=None, motion_samples=2)
    values = run_snapshot_metrics(gen, cfg, ["psnr", "ssim", "motion"], "mem://procedural", 4, settings=s,
                                  loader=loader_from(clips))
    assert s.frames == cfg.model.frames == 9  # T defaults to the training length
    assert set(values) == {"psnr", "ssim", *KEYS}
    assert all(np.isfinite(v) for v in values.values())
    assert values["motion_dir_cos_bestk"] >= values["motion_dir_cos"]
    assert gen.training  # mode restored for the trainer


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from pathlib import Path

        all_clips = procedural_clips(8, 32, 17)
        mine = all_clips[rank::world]  # each rank reads its own shards
        s = settings(Path(out) / f"r{rank}")
        values, _ = evaluate(copy_first_frame, loader_from(mine, batch=3), NAMES,
                             "mem://procedural", s)
        torch.save(values, Path(out) / f"values{rank}.pt")
        s.shared_stream = True  # every rank reads the whole stream and keeps clips i % world == rank
        values, _ = evaluate(copy_first_frame, loader_from(all_clips, batch=3), NAMES, "mem://procedural", s)
        torch.save(values, Path(out) / f"shared{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_equal_one_process(clips, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_rank_main, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    single, _ = evaluate(copy_first_frame, loader_from(clips), NAMES, "mem://procedural", settings(tmp_path / "one"))
    for name in ("values0", "values1", "shared0", "shared1"):
        got = torch.load(tmp_path / f"{name}.pt")
        assert got.keys() == single.keys()
        for k in single:
            # float32 detector outputs differ in the last bits with another batch grouping: hence 1e-6, not 1e-12
            # copy frame 0 is frozen: its seed spread is NaN on every rank, and only that key may be
            assert got[k] == pytest.approx(single[k], rel=1e-6, abs=1e-6, nan_ok=k == "motion_seed_spread"), k
