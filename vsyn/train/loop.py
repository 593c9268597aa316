"""The training loop, read top to bottom: set-up, resume, then one step per batch and maintenance at step
boundaries (logging, ticks, sample sheets, snapshots, metrics, preemption).

Schedule: within each cycle of n_critic + 1 steps the first n_critic are critic steps and the last a generator
step; every step draws a fresh batch. kimg counts clips shown to the critic. Everything random in a step is a
function of (seed, step) (see randomness.py, stream.py), so a resumed run continues bit-exactly on CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

from vsyn.config import Config
from vsyn.errors import VsynError
from vsyn.nn import build_critics, build_generator, compile_blocks, to_channels_last
from vsyn.snapshot import copy_snapshot
from vsyn.train import checkpoint
from vsyn.train.async_checkpoint import CheckpointSaver
from vsyn.train.background import BackgroundWriter
from vsyn.train.ema import GeneratorEMA
from vsyn.metrics import selection_score
from vsyn.train.hooks import SnapshotContext, best_metric, run_snapshot_hooks, snapshot_data
from vsyn.console import quiet_known_noise
from vsyn.data.probe import clip_size, fit_note
from vsyn.train.logs import Progress, ScalarLog, append_record, done_line, run_log, start_trackers
from vsyn.train.resume import plan_resume, remove_if_unused
from vsyn.train.loss import VideoGANLoss
from vsyn.train.randomness import StepRandom, step_seed
from vsyn.train.runtime import Runtime, build_runtime, world_size_from_env
from vsyn.train.samples import SampleSheet
from vsyn.train.signals import PreemptionFlag
from vsyn.train.steps import TrainSteps, check_cuda_graphs
from vsyn.train.stream import ClipStream, LoaderFactory, collect_readers
from vsyn.train.timers import PhaseClock, write_timing

log = logging.getLogger("vsyn.train")

EXIT_DONE = 0
EXIT_REQUEUE = 3  # saved after SIGTERM/SIGUSR2; the launcher requeues on this code
EXIT_INTERRUPTED = 130  # saved after Ctrl-C (SIGINT): 128 + SIGINT, as a shell reports an interrupted command
SAMPLE_CLIPS = 8
READER_LOOKAHEAD_STEPS = 32  # the next data block's reader starts this many steps early (vsyn.train.stream)


def loader_factory(cfg: Config, *, rank: int = 0, world: int = 1) -> LoaderFactory:
    """seed -> the global-batch reader over cfg.data.train's train split (every rank reads the same stream; see
    stream.py), or with data.reading=per_rank and world > 1, this rank's reader of its own batch / world clips.
    `DIR` or `DIR/manifest.json` reads the train split; `...#val` would read another on purpose.

    One reader epoch is one stream block, so a reader is replaced, never restarted, at block boundaries.
    Its workers ignore SIGTERM/SIGUSR2 (vsyn.data.worker_init_fn): the main process saves first.
    """
    per_rank = cfg.data.reading == "per_rank" and world > 1
    if not cfg.data.train:
        raise VsynError("data.train is empty: pack shards first (vsyn shards pack ...) and set data.train=DIR")
    from vsyn.data import TRAIN_SPLITS, make_loader, pin_split

    data = pin_split(cfg.data.train, TRAIN_SPLITS)  # once: a missing split fails here, not at the first block

    def make(seed: int):
        return make_loader(
            data,
            frames=cfg.model.frames,
            batch_size=cfg.train.batch // world if per_rank else cfg.train.batch,
            mode="train",
            stride=cfg.data.stride,
            size=cfg.model.resolution,
            flip=cfg.data.flip,
            random_crop=cfg.data.random_crop,
            workers=cfg.data.workers,
            shuffle_buffer=cfg.data.shuffle_buffer,
            seed=seed,
            epoch_samples=cfg.train.data_block_steps * cfg.train.batch,
            pin_memory=torch.cuda.is_available(),  # host-to-device copies then never stall the host
            rank=rank if per_rank else 0,  # global: the same stream on every rank; ClipStream keeps a slice
            world_size=world if per_rank else 1,
            disjoint=per_rank,  # ranks deal each pass over the shards: no clip read by two ranks in a pass
            labels=False,  # the losses read the frames only: no flow/mask decoding, copying, pinning
        )

    return make


def crossed(prev_nimg: int, nimg: int, every_kimg: float) -> bool:
    every = every_kimg * 1000
    return every > 0 and int(prev_nimg // every) != int(nimg // every)


def setup(cfg: Config, log_dir: Path | None) -> tuple[Runtime, GeneratorEMA]:
    """Networks, EMA and optimizers, identical on every rank, wrapped for the runtime. Shared with bench/train.py so
    the benchmark measures exactly the step the trainer runs."""
    t = cfg.train
    if t.channels_last and t.distributed == "deepspeed":
        # DeepSpeed broadcasts and flattens parameters through byte views, which need contiguous (NCHW) weights
        raise VsynError("train.channels_last=true does not work with train.distributed=deepspeed (DeepSpeed needs "
                        "contiguous weights); use one or the other")
    if cfg.model.motion_encoder and not cfg.loss.reconstruction:
        # only the reconstruction loss reaches the encoder; idle weights would also stop a DDP run at its 2nd step
        raise VsynError("model.motion_encoder=true trains only with loss.reconstruction > 0; set it, or drop the encoder")
    if t.cuda_graphs:  # before any work: Adam is built capturable below
        check_cuda_graphs(cfg, torch.device("cuda" if torch.cuda.is_available() else "cpu"), world_size_from_env())
    torch.manual_seed(t.seed)
    generator, critics = build_generator(cfg.model), build_critics(cfg.model)
    ema = GeneratorEMA(generator, t.ema_halflife_kimg, t.ema_rampup)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = t.cudnn_benchmark
        torch.backends.cudnn.benchmark_limit = t.cudnn_benchmark_limit
    if t.channels_last:  # the critics' 2D weights channels_last, 3D weights channels_last_3d
        to_channels_last(critics)
    # fused Adam: a few kernels per step instead of dozens (the GPU waits on launches at 64 px); DeepSpeed keeps
    # its own tested path
    fused = torch.cuda.is_available() and t.distributed == "ddp"
    # capturable: step counts and bias corrections on the device, so a captured optimizer step replays correctly
    adam = {"betas": cfg.optim.betas, "fused": fused or None, "capturable": t.cuda_graphs}
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.optim.lr_g, **adam)
    opt_d = torch.optim.Adam(critics.parameters(), lr=cfg.optim.lr_d, **adam)
    if t.compile:  # in place, block by block: state_dict keys unchanged, compile time bounded by the block kinds
        compile_blocks(generator, t.compile_backend)
        compile_blocks(critics, t.compile_backend)
    rt = build_runtime(cfg, generator, critics, opt_g, opt_d, log_dir=log_dir)
    ema.model.to(rt.device)
    return rt, ema


def run(cfg: Config, *, factory: LoaderFactory | None = None) -> int:
    """Train until cfg.train.total_kimg (or max_steps); returns EXIT_DONE, EXIT_REQUEUE after a signal save, or
    EXIT_INTERRUPTED after a Ctrl-C save.

    Every check that can refuse the command (a changed model against the checkpoint, unreadable data, clips smaller
    than the model) runs before anything is written; a run dir this call created is removed again if set-up fails.
    `factory` replaces the shard reader (benchmarks, tests); it must return global batches deterministically
    for a seed.
    """
    quiet_known_noise()
    main_rank = int(os.environ.get("RANK", "0")) == 0
    plan = plan_resume(cfg)
    if plan.finished:
        if main_rank:
            log.info("run dir %s: already finished at step %d; raise train.total_kimg (or train.max_steps) to train "
                     "further", cfg.run_dir, plan.step)
            log.info(done_line(plan.nimg, plan.step, plan.best, plan.checkpoint, cfg))
        return EXIT_DONE
    if factory is not None and cfg.data.reading == "per_rank" and world_size_from_env() > 1:
        raise VsynError("data.reading=per_rank reads data.train on each rank; it cannot take a custom reader")
    data_note = None
    if factory is None:
        data_note = fit_note(clip_size(cfg.data.train), cfg.model.resolution, cfg.data.random_crop) \
            if cfg.data.train else None
        factory = loader_factory(cfg)
    run_dir = cfg.run_dir
    if cfg.eval.metrics:
        snapshot_data(cfg)  # a missing held-out split fails now, not at the first snapshot
    with remove_if_unused(run_dir, enabled=main_rank), run_log(run_dir / "logs" if main_rank else None):
        if main_rank:
            start = f"resuming from {plan.checkpoint.name} at kimg {plan.nimg / 1000:.3f}" if plan.checkpoint \
                else "new run"
            log.info("run dir %s (%s)", run_dir.resolve(), start)
            for change in plan.changes:
                log.info("changed since the checkpoint: %s", change)
            if data_note:
                log.info(data_note)
        rt, ema = setup(cfg, log_dir=run_dir / "logs")
        try:
            return _train(cfg, rt, ema, factory, run_dir / "checkpoints")
        finally:
            rt.end()


def _train(cfg: Config, rt: Runtime, ema: GeneratorEMA, factory: LoaderFactory, ckpt_root: Path) -> int:
    t = cfg.train
    run_dir = cfg.run_dir
    steps = TrainSteps(cfg, rt, VideoGANLoss(cfg, rt))
    if rt.is_main:
        for d in (ckpt_root, run_dir / "logs", run_dir / "samples"):
            d.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.json")
        checkpoint.remove_stale_temps(ckpt_root)
    rt.barrier()

    # ---- resume from the newest complete checkpoint, if any
    state: dict[str, Any] = {"step": 0, "nimg": 0, "best": None}
    resume = checkpoint.find_resume(run_dir)
    if resume is not None:
        state = checkpoint.load_checkpoint(rt, resume, ema)
        log.info("resumed from %s (step %d, kimg %.3f)", resume, state["step"], state["nimg"] / 1000)
    step, nimg, best = int(state["step"]), int(state["nimg"]), state.get("best")
    stream = _clip_stream(cfg, factory, rt)
    stream.seek(step)
    scalars = ScalarLog(run_dir / "logs" / "stats.jsonl" if rt.is_main else None)
    if rt.is_main:
        scalars.truncate_after(step - 1)
    start_trackers(rt, cfg, step)
    sheet = _sample_sheet(cfg, factory, rt.raw_generator) if rt.is_main else None
    progress = Progress(rt.is_main, t.total_kimg, nimg / 1000)
    local_batch = t.batch // rt.world_size
    cycle = t.n_critic + 1
    writer = BackgroundWriter()  # checkpoint writes, off the loop's thread
    saver = CheckpointSaver(rt, ckpt_root, cfg, ema, t.keep_last, asynchronous=t.async_checkpoint, writer=writer)
    clock = PhaseClock(rt.device)  # where the wall time goes (vsyn.train.timers): logged with the scalars

    # ---- the loop
    with PreemptionFlag() as preempt:
        try:
            while True:
                clock.switch("data")
                batch = stream.next()
                real = batch["video"].to(rt.device, non_blocking=True).float() / 255  # (B,T,3,H,W) in [0,1]
                clock.switch("step")
                rnd = StepRandom(t.seed, step, rank=rt.rank, world=rt.world_size, local_batch=local_batch,
                                 device=rt.device)
                prev_nimg = nimg
                if step % cycle < t.n_critic:
                    # D phase: G runs without a graph; one scalar (real + fake + penalty), one backward.
                    stats = steps.critic(real, rnd, (step // cycle) * t.n_critic + step % cycle)
                    nimg += t.batch
                else:
                    stats = steps.generator(real, rnd)
                    clock.switch("ema")
                    ema.update(rt.raw_generator, nimg, t.n_critic * t.batch)
                clock.switch("logging")
                scalars.add(step, nimg, stats)
                step += 1

                # ---- maintenance at the step boundary (every branch below is taken by all ranks alike)
                done = nimg >= t.total_kimg * 1000 or (t.max_steps > 0 and step >= t.max_steps)
                tick = crossed(prev_nimg, nimg, t.tick_kimg)
                stop = False
                if step % t.log_every == 0 or tick or done:
                    clock.switch("logging", drain=True)  # the flush syncs anyway: GPU work queued is the step's
                    times = clock.interval("log")
                    scalars.annotate_last(times.scalars(t.batch))
                    scalars.flush(rt)
                    stop = rt.agree(preempt.requested)
                progress.update(nimg / 1000)
                if tick and rt.is_main:
                    progress.tick(nimg / 1000, step, stream.skipped, extra=clock.interval("tick").line())
                    rt.acc_g.log({"data/skipped_samples": stream.skipped, "progress/kimg": nimg / 1000}, step=step)
                if sheet is not None and (crossed(prev_nimg, nimg, t.sample_kimg) or done):
                    clock.switch("samples", drain=True)
                    sheet.write(ema.model, run_dir / "samples", f"step-{step:09d}")
                if crossed(prev_nimg, nimg, t.snapshot_kimg) or done or stop:
                    clock.switch("checkpoint", drain=True)
                    trainer_state = {"step": step, "nimg": nimg, "best": best, "data": stream.state(),
                                     "world_size": rt.world_size}
                    saved = saver.save(trainer_state)
                    if not stop:
                        clock.switch("metrics", drain=True)
                        if cfg.eval.metrics:  # hooks may read the snapshot's files, the best copy does
                            saver.wait()
                        best = _after_snapshot(cfg, rt, ema, saved, step, nimg, best)
                if stop or done:
                    clock.switch("checkpoint")
                    writer.close()  # the last checkpoint complete on disk before the exit
                    clock.switch(None)
                if stop:
                    code = EXIT_INTERRUPTED if preempt.received == signal.SIGINT else EXIT_REQUEUE
                    if rt.is_main:
                        log.info("%s: saved %s (step %d, kimg %.3f), exiting with %d; `vsyn train %s` resumes",
                                 "Ctrl-C" if code == EXIT_INTERRUPTED else "preemption signal", saved, step,
                                 nimg / 1000, code, cfg.run_dir)
                    return code
                if done:
                    if rt.is_main:
                        log.info(done_line(nimg, step, best, saved, cfg))
                    return EXIT_DONE
        finally:
            try:
                writer.close()  # after an error too: a write in flight holds a consistent step; it completes
            except Exception:  # noqa: BLE001 - the loop's own exception (if any) is the one to raise
                log.exception("a background checkpoint write failed")
            if rt.is_main:
                write_timing(run_dir / "logs" / "timing.json", clock, t.batch)
            progress.close()
            stream.close()


def _after_snapshot(cfg: Config, rt, ema: GeneratorEMA, saved: Path, step: int, nimg: int, best: Any) -> Any:
    """Metric hooks (collective: every rank gets the same values) and the best-by-metric snapshot, kept beside
    the rolling checkpoints as checkpoints/best-<metric>/ (a snapshot without COMPLETE: never resumed from)."""
    results = run_snapshot_hooks(SnapshotContext(cfg, saved, ema.model, step, nimg / 1000, rt.device))
    if results:
        rt.acc_g.log({f"metrics/{k}": v for k, v in results.items()}, step=step)
        if rt.is_main:
            log.info("metrics at kimg %.3f: %s", nimg / 1000, results)
            # keyed like the loss records, by the last step taken, so a resume from this checkpoint keeps it
            append_record(cfg.run_dir / "logs" / "stats.jsonl",
                          {"step": step - 1, "kimg": nimg / 1000, **{f"metrics/{k}": v for k, v in results.items()}})
    metric = best_metric(cfg, results)
    if metric and metric in results:
        score = selection_score(metric, float(results[metric]))
        if best is None or score < best["score"]:
            best = {"metric": metric, "value": float(results[metric]), "score": score, "step": step}
            if rt.is_main:
                dst, tmp = saved.parent / f"best-{metric}", saved.parent / f".tmp-best-{metric}"
                shutil.rmtree(tmp, ignore_errors=True)
                copy_snapshot(saved, tmp)
                shutil.rmtree(dst, ignore_errors=True)
                tmp.replace(dst)
                checkpoint.update_trainer_state(saved, best=best)  # a resume from here knows its own score
        rt.barrier()
    return best


def _clip_stream(cfg: Config, factory: LoaderFactory, rt: Runtime) -> ClipStream:
    """The global stream sliced per rank, or with data.reading=per_rank each rank's own reader (vsyn.train.stream)."""
    t = cfg.train
    per_rank = cfg.data.reading == "per_rank" and rt.world_size > 1
    reader = loader_factory(cfg, rank=rt.rank, world=rt.world_size) if per_rank else factory
    return ClipStream(reader, seed=t.seed, block_steps=t.data_block_steps, rank=rt.rank, world=rt.world_size,
                      per_rank=per_rank, lookahead=min(READER_LOOKAHEAD_STEPS, t.data_block_steps // 4))


def _first_clips(factory: LoaderFactory, seed: int) -> torch.Tensor:
    loader = factory(seed)
    batches = iter(loader)
    real = next(batches)["video"][:SAMPLE_CLIPS].clone()
    batches.close()
    return real  # the reader is unreferenced from here; collect_readers() reaps it (and its workers)


def _sample_sheet(cfg: Config, factory: LoaderFactory, generator) -> SampleSheet:
    """Fixed input clips (from a reader with its own seed) and fixed noise, so sheets compare across kimg."""
    real = _first_clips(factory, step_seed(cfg.train.seed, 0, 99))
    collect_readers()
    gen = torch.Generator().manual_seed(step_seed(cfg.train.seed, 0, 98))
    return SampleSheet(real.cpu(), generator.sample_noise(real.shape[0], generator=gen))
