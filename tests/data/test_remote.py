"""Shards over the network: a local HTTP server and a real S3 server (SeaweedFS), both started by the test suite."""

from __future__ import annotations

import pytest

from vsyn.data import make_loader

from .helpers import CLIPS, FRAMES, PER_SHARD, shards_cli

pytestmark = pytest.mark.service


def _eval_keys(url: str, workers: int = 2) -> tuple[list[str], int]:
    loader = make_loader(url, frames=FRAMES, batch_size=4, mode="eval", workers=workers)
    return [k for batch in loader for k in batch["__key__"]], loader.skipped


def test_http_manifest_and_patterns(procedural_shards, http_server):
    base = http_server(procedural_shards)
    keys, skipped = _eval_keys(f"{base}/manifest.json")
    assert len(keys) == len(set(keys)) == CLIPS and skipped == 0
    loader = make_loader(f"{base}/train-{{000000..000003}}.tar", frames=3, batch_size=4, workers=2,
                         shuffle_buffer=4, epoch_samples=16)
    assert [b["video"].shape[0] for b in loader] == [4, 4, 4, 4]


def test_http_missing_shard_is_skipped(shards_copy, http_server):
    (shards_copy / "train-000000.tar").unlink()
    keys, skipped = _eval_keys(f"{http_server(shards_copy)}/manifest.json")
    assert len(keys) == CLIPS - PER_SHARD and skipped == 1


@pytest.fixture(scope="module")
def s3_shards(procedural_shards, s3_server) -> str:
    url = f"s3://{s3_server.bucket}/procedural"
    assert shards_cli("upload", procedural_shards, url) == 0
    return url


def test_s3_upload_ls_and_stream(s3_shards, s3_server, capsys):
    assert shards_cli("ls", s3_shards) == 0
    listing = capsys.readouterr().out
    assert "train-000003.tar" in listing and f"4 shard(s), {CLIPS} clips" in listing and "MISSING" not in listing
    keys, skipped = _eval_keys(f"{s3_shards}/manifest.json")
    assert len(keys) == len(set(keys)) == CLIPS and skipped == 0
    loader = make_loader(f"{s3_shards}/train-{{000000..000003}}.tar", frames=5, batch_size=4, workers=2,
                         shuffle_buffer=8, epoch_samples=12)
    assert [tuple(b["video"].shape) for b in loader] == [(4, 5, 3, 32, 32)] * 3


def test_s3_reupload_skips_identical_shards(s3_shards, procedural_shards, capsys):
    assert shards_cli("upload", procedural_shards, s3_shards) == 0
    assert "uploaded 0 shard(s)" in capsys.readouterr().out


def test_s3_object_deleted_mid_epoch(procedural_shards, s3_server):
    url = f"s3://{s3_server.bucket}/deleted-mid-epoch"
    assert shards_cli("upload", procedural_shards, url) == 0
    loader = make_loader(f"{url}/manifest.json", frames=FRAMES, batch_size=PER_SHARD, mode="eval", workers=0)
    batches = iter(loader)
    keys = list(next(batches)["__key__"])  # shard 0 read; now two later shards vanish
    client = s3_server.client()
    for name in ("train-000002.tar", "train-000003.tar"):
        client.delete_object(Bucket=s3_server.bucket, Key=f"deleted-mid-epoch/{name}")
    keys += [k for batch in batches for k in batch["__key__"]]
    assert len(keys) == CLIPS - 2 * PER_SHARD and loader.skipped == 2


@pytest.mark.slow
def test_train_three_steps_from_s3(s3_shards, tmp_path):
    from vsyn.config import load_config
    from vsyn.train import run

    cfg = load_config("tiny-cpu", [f"data.train={s3_shards}/manifest.json", "train.max_steps=3",
                                   f"train.run_dir={tmp_path / 'run'}", "data.workers=1"])
    assert run(cfg) == 0
    assert (tmp_path / "run").is_dir()


def test_http_ls_reads_the_manifest(procedural_shards, http_server, capsys):
    assert shards_cli("ls", f"{http_server(procedural_shards)}/") == 0
    out = capsys.readouterr().out
    assert "train-000003.tar" in out and f"4 shard(s), {CLIPS} clips" in out


def test_ls_of_a_url_without_manifest_is_one_clear_error(tmp_path, http_server, capsys):
    from vsyn.errors import VsynError

    with pytest.raises(VsynError, match="cannot list"):
        shards_cli("ls", http_server(tmp_path))
