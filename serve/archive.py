"""Build the TorchServe model archive (.mar) from a vsyn checkpoint.

The archive holds the EMA generator's weights (safetensors: loading never runs code from the file), its
config.json, the handler and a model-config.yaml with the serving knobs. The generator is loaded with
`vsyn.inference.load_generator` at export time, so a checkpoint whose weights do not fit its config fails here,
on the build machine, instead of in a worker at 3 a.m.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import serve.handler
from serve.protocol import Limits
from vsyn.errors import VsynError
from vsyn.inference import load_generator
from vsyn.snapshot import save_snapshot
from vsyn.video import x264_preset


@dataclass
class ServingOptions:
    """model-config.yaml: TorchServe's per-model settings plus our handler's request limits."""

    batch_size: int = 8
    max_batch_delay_ms: int = 20  # a lone request waits this long for company: keep it well under one inference
    min_workers: int = 1
    max_workers: int = 1  # one worker per device: a second one on the same CPU only competes for cores
    response_timeout_s: int = 120
    device: str = "auto"  # auto (GPU when present) | cpu | gpu
    limits: Limits = field(default_factory=Limits)
    encode_threads: int = 0  # videos encoded in parallel per batch; 0 = min(8, CPU count)
    encode_processes: int = 0  # > 0: encode in this many spawned processes per worker instead of threads (no GIL)
    precision: str = "auto"  # auto (bf16 where the device runs it fast) | fp32 | bf16
    cuda_graphs: bool = True  # on a GPU, replay captured CUDA graphs of the generator (vsyn.graphs)
    encoder_preset: str = "medium"  # x264 preset for mp4 (ultrafast .. veryslow): faster = bigger files, less CPU
    # torch's CPU threads per worker; 0 = auto: 1 on a GPU (the model runs there; a full intra-op pool per worker
    # only fights the encoders and the other workers for cores), torch's default on CPU
    torch_threads: int = 0
    channels_last: bool = False  # on a GPU, channels_last weights and activations (cuDNN's NHWC kernels)
    # > 0: generate each batch in chunks of this many videos, encoding one chunk while the next generates
    generate_chunk: int = 0

    def to_yaml(self) -> str:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise VsynError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise VsynError(f"device must be auto, cpu or gpu, not {self.device!r}")
        if self.batch_size < 1 or self.max_batch_delay_ms < 0 or not 1 <= self.min_workers <= self.max_workers:
            raise VsynError("need batch_size >= 1, max_batch_delay_ms >= 0 and 1 <= min_workers <= max_workers")
        x264_preset(self.encoder_preset)  # a typo fails the export, not every worker at start-up
        counts = ("torch_threads", "encode_threads", "encode_processes", "generate_chunk")
        if any(getattr(self, k) < 0 for k in counts):
            raise VsynError(f"{', '.join(counts)} must be >= 0 (0: automatic / off)")
        data = {
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "responseTimeout": self.response_timeout_s,
            "handler": {
                **{k: getattr(self.limits, k) for k in Limits.__dataclass_fields__},
                "encode_threads": self.encode_threads,
                "encode_processes": self.encode_processes,
                "precision": self.precision,
                "cuda_graphs": self.cuda_graphs,
                "encoder_preset": self.encoder_preset,
                "torch_threads": self.torch_threads,
                "channels_last": self.channels_last,
                "generate_chunk": self.generate_chunk,
            },
        }
        if self.device != "auto":
            data["deviceType"] = self.device
        return yaml.safe_dump(data, sort_keys=False)


def export(
    checkpoint: str | Path,
    model_store: str | Path,
    *,
    name: str = "vsyn",
    version: str = "1.0",
    options: ServingOptions | None = None,
    force: bool = False,
) -> Path:
    """Write `<model_store>/<name>.mar` and return its path."""
    options = options or ServingOptions()
    model_config = options.to_yaml()  # validates the options before the (slower) checkpoint load
    model_store = Path(model_store)
    model_store.mkdir(parents=True, exist_ok=True)
    target = model_store / f"{name}.mar"
    if target.exists() and not force:
        raise VsynError(f"{target} exists (pass --force to overwrite)")
    generator, cfg = load_generator(checkpoint, ema=True, device="cpu")
    with tempfile.TemporaryDirectory(prefix=".export-", dir=model_store) as tmp:
        staging = Path(tmp)
        # Reuse the snapshot writer so the archive's weights are byte-for-byte what vsyn itself reads.
        save_snapshot(staging, generator, None, cfg, step=0, kimg=0.0)
        weights = staging / "generator_ema.safetensors"
        (staging / "generator.safetensors").unlink()  # identical copy; the archive carries one
        (staging / "model-config.yaml").write_text(model_config)
        handler = staging / "handler.py"
        shutil.copyfile(serve.handler.__file__, handler)
        cmd = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", name, "--version", version,
            "--serialized-file", str(weights),
            "--handler", str(handler),
            "--extra-files", f"{staging / 'config.json'},{staging / 'meta.json'}",
            "--config-file", str(staging / "model-config.yaml"),
            "--export-path", tmp, "--archive-format", "default",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise VsynError(f"torch-model-archiver failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        (staging / f"{name}.mar").replace(target)  # same filesystem: atomic, a reader never sees half a .mar
    return target
