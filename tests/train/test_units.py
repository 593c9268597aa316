"""Fast unit tests of the trainer's parts: DeepSpeed plumbing, freezing, EMA, scheduling, stream, checkpoints."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from vsyn.config import Config
from vsyn.errors import VsynError
from vsyn.train import checkpoint
from vsyn.train.ema import GeneratorEMA
from vsyn.train.loop import crossed
from vsyn.train.randomness import StepRandom
from vsyn.train.runtime import deepspeed_config, frozen, per_rank_batch, require_deepspeed
from vsyn.train.signals import PreemptionFlag
from vsyn.train.stream import ClipStream


def test_deepspeed_config_sets_clipping_buckets_and_micro_batch_explicitly():
    cfg = deepspeed_config(stage=2, micro_batch=4, world=2, clip=2.5)
    assert cfg["gradient_clipping"] == 2.5  # unset, Accelerate/DeepSpeed silently clip at 1.0
    zero = cfg["zero_optimization"]
    assert isinstance(zero["reduce_bucket_size"], int) and isinstance(zero["allgather_bucket_size"], int)
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["train_batch_size"] == 8
    assert cfg["gradient_accumulation_steps"] == 1
    assert not cfg["bf16"]["enabled"]  # autocast around forwards instead: fp32 master weights
    assert "auto" not in repr(cfg)
    with pytest.raises(VsynError, match="zero_stage"):
        deepspeed_config(stage=3, micro_batch=4, world=1, clip=1.0)


def test_missing_transformers_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name))
    with pytest.raises(VsynError, match=r"transformers.*pip install 'vsyn\[deepspeed\]'"):
        require_deepspeed()


def test_installed_deepspeed_stack_passes_the_check():
    require_deepspeed()  # the dev extra installs deepspeed and transformers


def test_batch_must_split_over_ranks():
    assert per_rank_batch(8, 2) == 4
    with pytest.raises(VsynError, match="divisible"):
        per_rank_batch(6, 4)


def test_frozen_critic_gets_no_gradient_and_flags_come_back():
    critic, gen = nn.Linear(3, 1), nn.Linear(3, 3)
    critic.bias.requires_grad_(False)  # a pre-existing per-parameter flag must survive
    with frozen(critic):
        critic(gen(torch.randn(2, 3))).sum().backward()
    assert critic.weight.grad is None and gen.weight.grad is not None
    assert critic.weight.requires_grad and not critic.bias.requires_grad


def test_networks_have_no_0dim_parameters():
    """DeepSpeed 0.19.8's initial broadcast fails on 0-dim parameters (it views them as uint8)."""
    from vsyn.config import load_config
    from vsyn.nn import build_critics, build_generator

    model = load_config("tiny-cpu").model
    for net in (build_generator(model), build_critics(model)):
        assert all(p.dim() > 0 for p in net.parameters())


def test_ema_half_life_in_kimg_with_rampup():
    ema = GeneratorEMA(nn.Linear(2, 2), halflife_kimg=1.0, rampup=0.0)
    assert ema.beta(cur_nimg=10**6, step_nimg=1000) == pytest.approx(0.5)
    ramped = GeneratorEMA(nn.Linear(2, 2), halflife_kimg=1.0, rampup=0.05)
    assert ramped.beta(cur_nimg=2000, step_nimg=100) == pytest.approx(0.5)  # half-life min(1000, 2000*0.05)
    g = nn.Linear(2, 2)
    e = GeneratorEMA(g, halflife_kimg=1.0, rampup=0.0)
    before = e.model.weight.clone()
    with torch.no_grad():
        g.weight.add_(1.0)
    e.update(g, cur_nimg=10**6, step_nimg=1000)
    assert torch.allclose(e.model.weight, before + 0.5)


def test_kimg_boundaries():
    assert crossed(3990, 4010, 4.0) and not crossed(4010, 4020, 4.0) and not crossed(0, 10**6, 0.0)


def _fake_factory(batch: int = 4):
    def make(seed: int):
        g = torch.Generator().manual_seed(seed)
        for _ in range(5):  # finite epochs: the stream must continue across them deterministically
            yield {"video": torch.randint(0, 255, (batch, 3, 3, 2, 2), generator=g, dtype=torch.uint8)}
    return make


def test_stream_seek_replays_exactly_and_ranks_split_the_global_batch():
    whole = ClipStream(_fake_factory(), seed=1, block_steps=7, rank=0, world=1)
    whole.seek(0)
    reference = [whole.next()["video"] for _ in range(20)]
    for start in (0, 3, 7, 13):
        s = ClipStream(_fake_factory(), seed=1, block_steps=7, rank=0, world=1)
        s.seek(start)
        assert all(torch.equal(s.next()["video"], reference[i]) for i in range(start, 20))
    ranks = [ClipStream(_fake_factory(), seed=1, block_steps=7, rank=r, world=2) for r in (0, 1)]
    for r in ranks:
        r.seek(5)
    for i in range(5, 12):
        assert torch.equal(torch.cat([r.next()["video"] for r in ranks]), reference[i])


def test_step_randomness_does_not_depend_on_world_size():
    class G(nn.Module):
        def sample_noise(self, batch, generator=None, device=None):
            return torch.randn(batch, 3, generator=generator)

    def draws(rank, world):
        r = StepRandom(0, 17, rank=rank, world=world, local_batch=4 // world, device=torch.device("cpu"))
        return r.noise(G()), r.frame_indices(9, 4), r.uniform(4)

    one = draws(0, 1)
    two = [draws(0, 2), draws(1, 2)]
    assert torch.equal(one[0], torch.cat([two[0][0], two[1][0]]))
    assert torch.equal(one[1], two[0][1]) and torch.equal(one[1], two[1][1])
    assert torch.equal(one[2], torch.cat([two[0][2], two[1][2]]))


class _FakeRuntime:
    """Just enough of Runtime for the checkpoint writer: one rank, a tiny generator."""

    is_main, device = True, torch.device("cpu")

    def __init__(self):
        self.raw_generator = nn.Linear(2, 2)

    def barrier(self):
        pass

    def save(self, directory: Path):
        for net in ("g", "d"):
            (directory / net).mkdir(parents=True)
            (directory / net / "model.safetensors").write_text("x")


def test_checkpoints_are_atomic_complete_and_pruned(tmp_path):
    rt, cfg = _FakeRuntime(), Config()
    root = tmp_path / "checkpoints"
    ema = GeneratorEMA(rt.raw_generator, 1.0, 0.0)
    for step in (3, 6, 9):
        checkpoint.save_checkpoint(rt, root, cfg, ema, {"step": step, "nimg": step * 4}, keep_last=2)
    names = sorted(p.name for p in root.iterdir())
    assert names == ["ckpt-000000006", "ckpt-000000009"]
    for name in names:
        d = root / name
        assert (d / "COMPLETE").is_file() and (d / "state" / "g").is_dir() and (d / "state" / "d").is_dir()
        assert {"config.json", "generator.safetensors", "generator_ema.safetensors", "meta.json"} <= {
            p.name for p in d.iterdir()}
    # a save that died half-way: an incomplete newer dir and a temp dir are ignored, then cleaned up
    (root / "ckpt-000000012").mkdir()
    (root / ".tmp-ckpt-000000015").mkdir()
    (root / ".tmp-ckpt-000000015" / "COMPLETE").write_text("")  # killed between the marker and the rename
    assert checkpoint.find_resume(tmp_path) == root / "ckpt-000000009"
    checkpoint.remove_stale_temps(root)
    assert not (root / ".tmp-ckpt-000000015").exists()


def test_preemption_flag_catches_usr2_and_term_then_restores_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        with PreemptionFlag() as flag:
            assert not flag.requested
            os.kill(os.getpid(), sig)
            assert flag.requested and flag.received == sig
    assert signal.getsignal(signal.SIGUSR2) == before


def test_phase_clock_charges_each_interval_to_the_running_phase(monkeypatch):
    from vsyn.train import timers

    now = [100.0]
    monkeypatch.setattr(timers.time, "perf_counter", lambda: now[0])
    clock = timers.PhaseClock(torch.device("cpu"))
    for phase, seconds in [("data", 1.0), ("step", 6.0), ("ema", 0.5), ("logging", 0.5), ("data", 2.0),
                           ("step", 6.0), ("checkpoint", 4.0)]:
        clock.switch(phase)
        now[0] += seconds
    log = clock.interval("log")
    assert log.seconds == {"data": 3.0, "step": 12.0, "ema": 0.5, "checkpoint": 4.0, "samples": 0.0,
                           "metrics": 0.0, "logging": 0.5}
    assert log.wall_s == 20.0 and log.steps == 2 and log.gpu_step_s is None
    scalars = log.scalars(clips_per_step=8)
    assert scalars["time/step"] == 0.6 and scalars["time/data"] == 0.15 and scalars["time/clips_per_s"] == 16 / 20
    assert log.line() == "time: step 60%, checkpoint 20%, data 15%, ema 2%, logging 2%"
    clock.switch("step")
    now[0] += 3.0
    assert clock.interval("log").seconds["step"] == 3.0  # a new window per call
    assert clock.interval("tick").wall_s == 23.0  # each consumer has its own window
    with pytest.raises(KeyError):
        clock.switch("lunch")


def _per_rank_streams(shards: Path, world: int, block_steps: int) -> list[ClipStream]:
    from trainkit import TINY

    from vsyn.config import load_config
    from vsyn.train.loop import loader_factory

    cfg = load_config("tiny-cpu", [f"data.train={shards}", *TINY, "data.workers=0", "data.shuffle_buffer=2",
                                   "data.reading=per_rank"])
    return [ClipStream(loader_factory(cfg, rank=r, world=world), seed=3, block_steps=block_steps, rank=r,
                       world=world, per_rank=True) for r in range(world)]


@pytest.mark.parametrize("world", [2, 4])  # 3 shards: dealt whole to 2 ranks, sample by sample to 4
def test_per_rank_reading_sees_no_clip_twice_in_a_block_and_seeks_exactly(shards, world):
    """data.reading=per_rank: each rank reads batch/world clips of its own; within a block no clip reaches two
    ranks (or one rank twice), and a rank's stream repositioned at any step continues exactly (resume)."""
    block, steps = 3, 6
    batches = []
    for stream in _per_rank_streams(shards, world, block):
        stream.seek(0)
        batches.append([stream.next() for _ in range(steps)])
        stream.close()
    for b in batches:
        assert all(x["video"].shape[0] == 4 // world for x in b)
    for first in range(0, steps, block):
        keys = [k for rank in batches for x in rank[first:first + block] for k in x["__key__"]]
        assert len(keys) == block * 4 and len(set(keys)) == len(keys), keys
    everything = {k for rank in batches for x in rank for k in x["__key__"]}
    assert len(everything) > block * 4  # the next block is a fresh draw, not the same clips again
    for start in (1, 4):
        for rank, stream in enumerate(_per_rank_streams(shards, world, block)):
            stream.seek(start)
            for i in range(start, steps):
                got = stream.next()
                assert got["__key__"] == batches[rank][i]["__key__"]
                assert torch.equal(got["video"], batches[rank][i]["video"])
            stream.close()


def test_stream_lookahead_starts_the_next_reader_early_and_gives_the_same_batches():
    opened: list[int] = []  # stream step at which each reader was made
    fake = _fake_factory()

    def factory(seed):
        opened.append(stream.step)
        return fake(seed)

    plain = ClipStream(_fake_factory(), seed=1, block_steps=7, rank=0, world=1)
    plain.seek(0)
    stream = ClipStream(factory, seed=1, block_steps=7, rank=0, world=1, lookahead=3)
    stream.seek(0)
    for _ in range(20):
        assert torch.equal(stream.next()["video"], plain.next()["video"])
    # blocks 1, 2, 3 made 3 steps before they begin; the fake's 5-batch epochs make a second reader at steps 5, 12, 19
    assert opened == [0, 4, 5, 11, 12, 18, 19]


def test_training_reader_skips_motion_labels_and_reads_the_same_frames(shards):
    """The trainer's reader decodes no flow/mask (its losses read frames only); the frames are the ones a reader
    with labels gives for the same seed."""
    from trainkit import TINY

    from vsyn.config import load_config
    from vsyn.data import make_loader
    from vsyn.train.loop import loader_factory

    cfg = load_config("tiny-cpu", [f"data.train={shards}", *TINY, "data.workers=0"])
    plain = next(iter(loader_factory(cfg)(5)))
    labelled = next(iter(make_loader(shards, frames=9, batch_size=4, workers=0, shuffle_buffer=16, seed=5, size=32,
                                     epoch_samples=cfg.train.data_block_steps * 4)))
    assert "flow" in labelled and "mask" in labelled and "flow" not in plain and "mask" not in plain
    assert plain["__key__"] == labelled["__key__"] and torch.equal(plain["video"], labelled["video"])


@pytest.mark.filterwarnings("error::tqdm.TqdmWarning")  # tqdm warns (clamping frac) past 100%
def test_progress_stays_within_100_percent_and_eta_is_never_negative():
    from vsyn.train.logs import Progress

    progress = Progress(True, total_kimg=0.02, start_kimg=0.0)
    try:
        progress.tick(0.008, 1, 0)
        progress._last_draw = 0.0
        progress.update(0.024)  # the last step overshoots total_kimg by part of a batch
        assert progress.bar.n <= progress.bar.total and progress.bar.total == pytest.approx(0.024)
        line = progress.tick(0.024, 4, 0)
        assert "ETA     0.0 min" in line and "gpu_mem" not in line  # no negative ETA; no GPU figure on a CPU
    finally:
        progress.close()
    resumed = Progress(True, total_kimg=0.02, start_kimg=0.03)  # total_kimg lowered below the checkpoint's kimg
    try:
        assert resumed.bar.total >= resumed.bar.n
    finally:
        resumed.close()
