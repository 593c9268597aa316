"""The trainer: `run(cfg)` is the one entry point behind `vsyn train` and the SLURM launcher.

loop.py      the training loop (read it top to bottom)
loss.py      the math of a critic step and a generator step
runtime.py   everything distributed: Accelerate DDP or DeepSpeed (two engines), collectives, save/load
checkpoint.py  atomic full-state checkpoints, keep-last-K, resume discovery
async_checkpoint.py  the same checkpoints written by a background thread from a host copy (background.py: the thread)
timers.py    where the loop's wall time goes (data, step, EMA, checkpoint, samples, metrics, logging)
resume.py    what may change on resume (checked before the run dir is touched); a finished run; clean failed starts
stream.py    the data stream with a resumable position; randomness.py  per-step randomness from (seed, step)
ema.py, logs.py, samples.py, hooks.py, signals.py  EMA, scalars/progress/train.log/TensorBoard, sample sheets,
             snapshot hooks, preemption and Ctrl-C
"""

from vsyn.train.loop import EXIT_DONE, EXIT_INTERRUPTED, EXIT_REQUEUE, run

__all__ = ["EXIT_DONE", "EXIT_INTERRUPTED", "EXIT_REQUEUE", "run"]
