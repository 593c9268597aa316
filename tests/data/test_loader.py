"""The reading pipeline on local shards: shapes, epochs, evaluation coverage, augmentation that keeps labels true."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from shards.procedural import make_clip
from vsyn.data import make_loader, resolve, worker_init_fn
from vsyn.data.clips import Clip, crop, hflip, window
from vsyn.errors import VsynError

from .helpers import CLIPS, FRAMES, SIZE, pack_procedural, warp_back


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["__key__"]]


def test_train_batches_and_epochs(procedural_shards):
    loader = make_loader(procedural_shards / "manifest.json", frames=5, batch_size=4, stride=2, workers=2,
                         shuffle_buffer=8, seed=1)
    assert len(loader) == CLIPS // 4
    for _ in range(2):  # epochs continue one stream; each is exactly len() batches
        batches = list(loader)
        assert len(batches) == len(loader)
    batch = batches[0]
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (4, 5, 3, SIZE, SIZE)
    assert batch["flow"].dtype == torch.float32 and batch["flow"].shape == (4, 4, 2, SIZE, SIZE)
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape == (4, SIZE, SIZE)
    assert len(batch["__key__"]) == 4 and loader.skipped == 0


def test_train_stream_is_seeded(procedural_shards):
    def first_keys(seed: int) -> list[str]:
        loader = make_loader(procedural_shards, frames=3, batch_size=4, workers=0, shuffle_buffer=8, seed=seed)
        return next(iter(loader))["__key__"]

    assert first_keys(3) == first_keys(3) != first_keys(4)


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_reads_every_sample_once(procedural_shards, workers):
    loader = make_loader(procedural_shards, frames=FRAMES, batch_size=5, mode="eval", workers=workers)
    keys = _keys(loader)
    assert len(keys) == CLIPS == len(set(keys))
    manifest = json.loads((procedural_shards / "manifest.json").read_text())
    assert manifest["num_samples"] == CLIPS


def test_eval_frames_match_the_generator(procedural_shards):
    """Decoded clips are the packed procedural clips; masks are exact. mp4 is lossy (CRF 17, and 4:2:0 chroma costs
    most at this tiny 32 px size), so frames are only close."""
    loader = make_loader(procedural_shards, frames=FRAMES, batch_size=1, mode="eval", workers=0)
    batch = next(iter(loader))
    url = resolve(str(procedural_shards))[0].url
    import tarfile

    with tarfile.open(url) as tar:
        meta = json.load(tar.extractfile(f"{batch['__key__'][0]}.json"))
    clip = make_clip(meta["seed"], SIZE, FRAMES)
    video = batch["video"][0].permute(0, 2, 3, 1).numpy().astype(float)
    assert np.abs(video - clip["video"]).mean() < 8.0
    np.testing.assert_array_equal(batch["mask"][0].numpy(), clip["mask"])
    np.testing.assert_allclose(batch["flow"][0].numpy(), clip["flow"], atol=2e-3)


@pytest.mark.parametrize("layout", ["jpg", "npy"])
def test_other_layouts_read_the_same(tmp_path, layout):
    out = pack_procedural(tmp_path / layout, clips=4, layout=layout, per_shard=4)
    batch = next(iter(make_loader(out, frames=4, stride=2, batch_size=4, mode="eval", workers=0)))
    assert batch["video"].shape == (4, 4, 3, SIZE, SIZE) and batch["flow"].shape == (4, 3, 2, SIZE, SIZE)


def test_window_stride_and_limits():
    rng = np.random.default_rng(0)
    assert window(9, 5, 2, None) == [0, 2, 4, 6, 8]
    starts = {window(25, 5, 3, rng)[0] for _ in range(200)}
    assert starts == set(range(25 - 12))
    with pytest.raises(ValueError, match="need 13"):
        window(12, 5, 3, rng)


def test_flip_keeps_flow_true():
    """After a horizontal flip, frame t+1 warped back by the flipped flow still matches frame t in the sky, far
    better than with the unflipped flow (a scene whose sky moves sideways at 1 px/frame: flipping must matter)."""
    c = make_clip(1, 64, 3, water=False)
    assert np.abs(c["flow"][0, 0][c["mask"] == 0]).mean() > 0.8
    flipped = hflip(Clip(c["video"], c["flow"], c["mask"]))
    sky = flipped.mask == 0
    sky[:, :4] = sky[:, -4:] = False
    sky &= np.roll(sky, 4, 0) & np.roll(sky, -4, 0)
    err = np.abs(warp_back(flipped.video[1], flipped.flow[0]) - flipped.video[0])[sky].mean()
    err_unflipped_flow = np.abs(warp_back(flipped.video[1], c["flow"][0]) - flipped.video[0])[sky].mean()
    assert err < 1.0 and err < 0.25 * err_unflipped_flow
    np.testing.assert_array_equal(hflip(flipped).video, c["video"])


def test_crop_is_centred_or_random():
    position = (np.arange(10)[:, None] * 12 + np.arange(12)[None, :]).astype(np.uint8)  # pixel value = y * 12 + x
    video = np.broadcast_to(position[None, :, :, None], (2, 10, 12, 3)).copy()
    centred = crop(Clip(video, None, np.zeros((10, 12), np.uint8)), 8, None)
    assert centred.video.shape == (2, 8, 8, 3) and centred.mask.shape == (8, 8)
    assert centred.video[0, 0, 0, 0] == 1 * 12 + 2
    rng = np.random.default_rng(0)
    origins = {int(crop(Clip(video), 8, rng).video[0, 0, 0, 0]) for _ in range(100)}
    assert origins == {y * 12 + x for y in range(3) for x in range(5)}


def test_size_crops_through_the_loader(procedural_shards):
    loader = make_loader(procedural_shards, frames=3, batch_size=2, size=24, random_crop=True, workers=0)
    batch = next(iter(loader))
    assert batch["video"].shape[-2:] == (24, 24) and batch["mask"].shape[-2:] == (24, 24)


def test_resolve_forms(procedural_shards):
    by_dir = resolve(str(procedural_shards))
    assert len(by_dir) == 4 and all(s.num_samples == 6 for s in by_dir)
    assert [s.url for s in resolve(str(procedural_shards / "manifest.json#train"))] == [s.url for s in by_dir]
    pattern = str(procedural_shards / "train-{000000..000003}.tar")
    assert [s.url for s in resolve(pattern)] == [s.url for s in by_dir]
    with pytest.raises(VsynError, match="no shards of split 'val'"):
        resolve(str(procedural_shards / "manifest.json#val"))
    with pytest.raises(VsynError, match="cannot read shard manifest"):
        resolve(str(procedural_shards / "nothing" / "manifest.json"))


def test_bad_arguments_are_one_line_errors(procedural_shards):
    with pytest.raises(VsynError, match="mode"):
        make_loader(procedural_shards, frames=3, batch_size=2, mode="test")
    with pytest.raises(VsynError, match=">= 1"):
        make_loader(procedural_shards, frames=0, batch_size=2)


def test_worker_init_ignores_trainer_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}
    try:
        worker_init_fn(0)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in saved)  # Ctrl-C too: the trainer saves first
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
