"""Damaged data: skipped, reported once with its URL, counted -- and a clear error when nothing is readable."""

from __future__ import annotations

import io
import logging
import tarfile

import pytest

from vsyn.data import make_loader
from vsyn.errors import VsynError

from .helpers import CLIPS, FRAMES, PER_SHARD


def _eval_keys(urls, workers: int = 0) -> tuple[list[str], int]:
    loader = make_loader(urls, frames=FRAMES, batch_size=4, mode="eval", workers=workers)
    keys = [k for batch in loader for k in batch["__key__"]]
    return keys, loader.skipped


def test_truncated_shard_keeps_what_came_before(shards_copy, caplog):
    shard = shards_copy / "train-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="vsyn.data"):
        keys, skipped = _eval_keys(shards_copy / "manifest.json")
    assert PER_SHARD * 3 <= len(keys) < CLIPS and len(set(keys)) == len(keys)
    assert skipped == 1
    assert [r for r in caplog.records if "train-000001.tar" in r.getMessage()]


def test_garbage_member_costs_one_sample(shards_copy, caplog):
    shard = shards_copy / "train-000002.tar"
    out, bad_key = io.BytesIO(), None
    with tarfile.open(shard) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".mp4") and bad_key is None:  # the first sample's video
                data = b"\x00garbage" * 100
                bad_key = member.name.split(".")[0]
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    shard.write_bytes(out.getvalue())
    with caplog.at_level(logging.WARNING, logger="vsyn.data"):
        keys, skipped = _eval_keys(shards_copy / "manifest.json", workers=2)
    assert len(keys) == CLIPS - 1 and bad_key not in keys and skipped == 1
    assert sum(bad_key in r.getMessage() for r in caplog.records) == 1


def test_missing_shard_is_skipped(shards_copy):
    (shards_copy / "train-000003.tar").unlink()
    keys, skipped = _eval_keys(shards_copy / "manifest.json")
    assert len(keys) == CLIPS - PER_SHARD and skipped == 1


def test_training_skips_a_missing_shard_and_reports_it_once(shards_copy, caplog):
    urls = [str(shards_copy / "train-000000.tar"), str(shards_copy / "gone.tar")]
    loader = make_loader(urls, frames=3, batch_size=2, workers=2, shuffle_buffer=4, epoch_samples=40)
    with caplog.at_level(logging.WARNING, logger="vsyn.data"):
        batches = list(loader)
    assert len(batches) == 20 and loader.skipped >= 1
    assert sum("gone.tar" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_nothing_readable_is_one_clear_error(tmp_path, mode):
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    urls = [str(tmp_path / "missing.tar"), str(tmp_path / "junk.tar")]
    loader = make_loader(urls, frames=3, batch_size=2, mode=mode, workers=1, shuffle_buffer=2)
    with pytest.raises(VsynError, match="missing.tar") as info:
        next(iter(loader))
    assert "\n" not in str(info.value) and "junk.tar" in str(info.value)
