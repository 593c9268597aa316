"""Splits are honoured everywhere: training reads the train split, evaluation and snapshot metrics the held-out one
(val, else test), an explicit #split wins, and a path without split information is read whole with one note."""

from __future__ import annotations

import json
import logging
import tarfile

import pytest
import torch

from vsyn.data import EVAL_SPLITS, TRAIN_SPLITS, make_loader, pin_split
from vsyn.data import urls as urls_module
from vsyn.errors import VsynError

from .helpers import shards_cli

CLIPS, SIZE, FRAMES = 12, 32, 3


@pytest.fixture(scope="module")
def split_pack(tmp_path_factory):
    """12 procedural clips, about a quarter of them val; and 4 held-out test scenes packed on their own."""
    root = tmp_path_factory.mktemp("splits")
    both, test = root / "both", root / "test"
    common = ("--size", SIZE, "--frames", FRAMES, "--shard-samples", 4, "--layout", "npy", "--workers", 1)
    assert shards_cli("pack", "procedural", both, "--clips", CLIPS, "--val-fraction", 0.3, *common) == 0
    assert shards_cli("pack", "procedural", test, "--clips", 4, "--split", "test", *common) == 0
    return both, test


def _keys(data, splits) -> set[str]:
    loader = make_loader(data, frames=FRAMES, batch_size=4, mode="eval", workers=0, splits=splits)
    return {k for batch in loader for k in batch["__key__"]}


def _split_keys(out, split: str) -> set[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    keys = set()
    for entry in manifest["shards"]:
        if entry["split"] == split:
            with tarfile.open(out / entry["name"]) as tar:
                keys |= {m.name.split(".", 1)[0] for m in tar.getmembers()}
    return keys


def test_train_and_eval_read_their_own_split(split_pack):
    both, test = split_pack
    train, val = _split_keys(both, "train"), _split_keys(both, "val")
    assert train and val and not train & val
    assert _keys(both, TRAIN_SPLITS) == train
    assert _keys(both / "manifest.json", EVAL_SPLITS) == val
    assert _keys(f"{both}/manifest.json#train", EVAL_SPLITS) == train  # named on purpose: wins
    assert _keys(both, None) == train | val  # the plain reader reads what it is given
    assert _keys(test, EVAL_SPLITS) == _split_keys(test, "test")  # no val: the test split
    assert pin_split(str(both), EVAL_SPLITS) == f"{both}/manifest.json#val"
    assert pin_split(f"{both}::{test}", EVAL_SPLITS) == f"{both}/manifest.json#val::{test}/manifest.json#test"


def test_a_missing_split_is_a_clear_error(split_pack, tmp_path):
    _, test = split_pack
    with pytest.raises(VsynError, match=r"has no train split \(it has: test\).*manifest.json#<split>"):
        pin_split(str(test), TRAIN_SPLITS)
    with pytest.raises(VsynError, match="held-out scenes only"):
        shards_cli("pack", "procedural", tmp_path / "x", "--clips", 2, "--split", "test", "--val-fraction", 0.5)


def test_no_split_information_is_noted_once(split_pack, caplog, monkeypatch):
    both, _ = split_pack
    monkeypatch.setattr(urls_module, "_NOTED", set())
    pattern = str(both / "train-{000000..000001}.tar")
    with caplog.at_level(logging.WARNING, logger="vsyn.data"):
        for _ in range(3):
            assert pin_split(pattern, TRAIN_SPLITS) == pattern
    notes = [r for r in caplog.records if "no split information" in r.getMessage()]
    assert len(notes) == 1 and pattern in notes[0].getMessage()


def test_trainer_reads_train_and_snapshots_read_val(split_pack):
    """The trainer's reader factory and the snapshot metrics' data, from the same `data.train=DIR`."""
    from vsyn.config import load_config
    from vsyn.metrics import run_snapshot_metrics
    from vsyn.metrics.utils import copy_first_frame
    from vsyn.train.hooks import best_metric, snapshot_data
    from vsyn.train.loop import loader_factory

    both, test = split_pack
    cfg = load_config("tiny-cpu", [f"data.train={both}", "data.workers=0", "model.frames=3", "model.spatial_frames=2",
                                         "train.batch=4"])
    loader = loader_factory(cfg)(0)
    seen = {k for _, batch in zip(range(6), loader) for k in batch["__key__"]}
    assert seen <= _split_keys(both, "train")
    assert snapshot_data(cfg) == f"{both}/manifest.json#val"
    cfg.data.val = str(test)
    assert snapshot_data(cfg) == f"{test}/manifest.json#test"

    firsts: list[bytes] = []

    def recording(images, num_frames):
        firsts.extend((image * 255).round().to(torch.uint8).numpy().tobytes() for image in images)
        return copy_first_frame(images, num_frames)

    cfg.data.val = ""
    val = make_loader(f"{both}/manifest.json#val", frames=FRAMES, batch_size=8, mode="eval", workers=0)
    val_firsts = {c[0].numpy().tobytes()
                  for batch in val for c in batch["video"]}
    n = len(_split_keys(both, "val"))
    values = run_snapshot_metrics(recording, cfg, ["psnr"], cfg.data.train, n)
    assert len(firsts) == n and set(firsts) == val_firsts and 0 < values["psnr"] <= 100
    assert best_metric(cfg, {"motion_score": 1.0}) == "motion_score"  # best follows the motion score by default
    cfg.eval.best_metric = "psnr"
    assert best_metric(cfg, {"motion_score": 1.0, "psnr": 20.0}) == "psnr"
