"""Run configuration: typed dataclasses, loaded from YAML (shipped presets or a path) plus `key=value` overrides.

One object describes a run end to end; it is saved beside every checkpoint, so a checkpoint is self-describing.
Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vsyn.errors import VsynError


@dataclass
class ModelConfig:
    """Networks. Defaults are the original's 128 px Sky setup (method.md §1-3)."""

    generator: str = "style_rnn"  # style_rnn | dvdgan
    resolution: int = 128
    frames: int = 25  # clip length including the input frame 0
    ch_g: int = 32
    start_fp: int = 2  # sizing rule: depth = min(max_fp, log2(res) - start_fp)
    max_fp: int = 5
    style_dim: int = 256
    latent_noise: bool = False  # beyond the original: per-video noise so one image has several futures
    noise_dim: int = 64
    # beyond the original, both off by default (vsyn.nn.generators.StyleRNNGenerator says why they exist):
    # noise_to_style: the latent also shifts the style vector's logits (StyleGAN's z -> w path), so it reaches every
    # modulated conv and the head; gru_seed: "features" (the original: h0 = the encoder map) or "tanh" (h0 =
    # tanh(encoder map), in the GRU state's own range)
    noise_to_style: bool = False
    gru_seed: str = "features"
    # pixels: the original's ToRGB (every pixel synthesised); motion: the last layer predicts motion fields and
    # frames are the input warped by them, still where the moving mask is 0 (vsyn.nn.motion; style_rnn only)
    head: str = "pixels"
    motion_field: str = "eulerian"  # eulerian (one steady velocity field, integrated) | lagrangian (per frame)
    max_speed: float = 2.0  # motion head: largest speed in px/frame at model resolution
    # beyond the original: an encoder that reads z off a real clip, for loss.reconstruction (vsyn.nn.motion_encoder);
    # needs latent_noise; inference never runs it
    motion_encoder: bool = False
    ch_ds: int = 16
    ch_dt: int = 64
    spatial_frames: int = 8  # K frames shown to the spatial critic
    dt_prepool: bool = False  # DVD-GAN's 2x spatial pre-pool for the temporal critic


@dataclass
class LossConfig:
    kind: str = "wgan-gp"  # wgan-gp (the original) | hinge | logistic (non-saturating + lazy R1)
    gp_weight: float = 1.0
    spatial_weight: float = 1.0
    temporal_weight: float = 5.0
    r1_gamma: float = 1.0
    r1_interval: int = 16  # lazy R1: penalise every N critic steps, scaled by N
    # motion head only (0 = off): total variation of the velocity field (px/frame per px), and the mean of the
    # moving mask's probability (a prior that whatever need not move stays still)
    motion_smooth: float = 0.0
    motion_still: float = 0.0
    # mode seeking (Mao et al. 2019, MSGAN) on the velocity field: a G step pairs each photo with two latents and
    # adds λ / (mean|v1 − v2| / mean|z1 − z2| + 0.01). Without it the head can ignore the noise and give every
    # future of a photo the same motion; then best-of-K scores equal the mean ones.
    motion_diversity: float = 0.0
    # reconstruction (cVAE-GAN, as Animating Landscape trains its motion): each G step also regenerates the real
    # clips from frame 0 and the z model.motion_encoder reads off them, adding λ_rec · mean|fake − real| over frames
    # 1..T−1 and λ_KL · KL(q(z|clip) ‖ N(0, I)). The latent then has to carry the clip's motion, and the moving mask
    # opens where warping the photo explains the clip. 0 = off (the original: adversarial losses only).
    reconstruction: float = 0.0
    # 0.001: at 0.01 a two-clip case with opposite motions collapsed onto one mean motion for 1 of 5 seeds (z ignored),
    # at 0.001 for none (tests/train/test_reconstruction.py)
    kl: float = 0.001
    # the generator's adversarial terms ramp linearly from 0 to full over the first N kimg (the critics train from
    # the start): the motion field learns from reconstruction before the critics can push the moving mask shut
    adversarial_warmup_kimg: float = 0.0
    # fp32: the penalty's critic forward and double backward in float32 whatever train.precision says (the
    # original's numerics); autocast: in the step's precision (bf16 under train.precision=bf16), with the input
    # gradient and its norm in float32. The penalty is most of a critic step: autocast is the fast choice on GPU.
    penalty_precision: str = "fp32"


@dataclass
class OptimConfig:
    lr_g: float = 3e-4
    lr_d: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    clip_g: float = 2.5  # gradient-norm clip per network (the original: 2.5 for style2)
    clip_d: float = 2.5


@dataclass
class DataConfig:
    train: str = ""  # shard URL(s): path, brace pattern, http(s)://, s3://, or a manifest.json
    val: str = ""
    stride: int = 1  # temporal stride inside a sample when taking the T-frame window
    flip: bool = True
    random_crop: bool = False
    workers: int = 2
    shuffle_buffer: int = 256
    # global: every rank reads the whole global batch and keeps its slice (N ranks see exactly the clips one
    # process would: the DDP == one-process equivalence). per_rank: each rank reads only its own clips from its own
    # shards (decoding cost per rank / N; a different, equally random stream; no clip read by two ranks in a pass)
    reading: str = "global"


@dataclass
class TrainConfig:
    batch: int = 8  # global batch (clips per optimizer step, summed over ranks)
    n_critic: int = 2  # critic steps per generator step
    total_kimg: float = 1000.0
    tick_kimg: float = 4.0
    snapshot_kimg: float = 50.0
    sample_kimg: float = 50.0
    keep_last: int = 3
    ema_halflife_kimg: float = 10.0
    ema_rampup: float = 0.05  # EMA half-life ramps up with kimg * rampup; 0 disables
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16
    # the critics in channels_last / channels_last_3d (cuDNN's native layout for bf16 convs); the generator, whose
    # per-frame reshapes would copy, stays NCHW
    channels_last: bool = False
    compile: bool = False  # torch.compile each block (regional); the penalties' double backward stays eager
    # torch.compile's backend with train.compile: inductor generates fused kernels; aot_eager traces the same graphs
    # (Dynamo, AOTAutograd) without code generation, for checking the compiled path where C++ compiles are too slow
    compile_backend: str = "inductor"
    # capture each whole step (forward, penalty, backward, clip, Adam) as a CUDA graph and replay it: the 64 px step
    # is launch-bound. One process, ddp runtime, CUDA only (vsyn.train.steps)
    cuda_graphs: bool = False
    cudnn_benchmark: bool = True  # autotune conv algorithms on CUDA (fixed shapes): off for bit-exact GPU reruns
    # cuDNN algorithms timed per convolution shape when autotuning (torch.backends.cudnn.benchmark_limit; PyTorch's
    # default 10, 0 = all): fewer should shorten the warm-up, perhaps at the price of slower picks
    cudnn_benchmark_limit: int = 10
    # checkpoints written by a background thread from a host copy (the loop pays for the copy only); DeepSpeed
    # runs always save synchronously (vsyn.train.async_checkpoint says why)
    async_checkpoint: bool = True
    distributed: str = "ddp"  # ddp | deepspeed
    zero_stage: int = 2
    run_dir: str = "runs/{name}"
    log_every: int = 10  # steps between scalar logs
    max_steps: int = 0  # 0: run until total_kimg; >0 stops early (tests, benchmarks)
    data_block_steps: int = 500  # the data stream is reseeded every N steps; resume replays < N batches
    trackers: str = "tensorboard"  # comma list of Accelerate trackers: tensorboard, wandb; "" for none


@dataclass
class EvalConfig:
    metrics: str = ""  # comma list run at snapshots, e.g. "psnr,motion"
    n: int = 256
    best_metric: str = ""  # keep best-<metric> snapshot by this metric (lower is better)


@dataclass
class Config:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @property
    def run_dir(self) -> Path:
        return Path(self.train.run_dir.format(name=self.name))


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("vsyn.configs").iterdir() if p.name.endswith(".yaml"))


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field type, with an error that names the key."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.strip("()[] ").split(",") if v.strip()]
            args = typing.get_args(typ)
            if len(value) != len(args):
                raise ValueError(value)
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    except (TypeError, ValueError):
        raise VsynError(f"config key '{key}': cannot use {value!r} as {getattr(typ, '__name__', typ)}") from None
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise VsynError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise VsynError(f"config key '{full}' is a section; give its keys, e.g. {full}.<key>=...")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise VsynError(f"override '{item}' is not key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def _read_yaml(source: str) -> dict[str, Any]:
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VsynError(f"config '{source}' is a folder without config.json (not a run or snapshot dir)")
        path = path / "config.json"
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise VsynError(f"config '{source}' is not a YAML or JSON text file") from None
    elif source in preset_names():
        text = resources.files("vsyn.configs").joinpath(f"{source}.yaml").read_text()
    else:
        raise VsynError(f"config '{source}' is neither a file nor a preset ({', '.join(preset_names())})")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise VsynError(f"config '{source}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise VsynError(f"config '{source}' must be a mapping")
    return data


def load_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a Config from a preset name, a YAML/JSON file or a checkpoint dir, then `key=value` overrides."""
    cfg = Config()
    if source:
        data = _read_yaml(source)
        data.pop("_meta", None)
        _apply(cfg, data)
        if "name" not in data and Path(source).suffix in (".yaml", ".yml"):
            cfg.name = Path(source).stem
        elif "name" not in data:
            cfg.name = source
    for item in overrides:
        _apply(cfg, _parse_override(item))
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    _apply(cfg, {k: v for k, v in data.items() if k != "_meta"})
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    m = cfg.model
    if m.generator not in ("style_rnn", "dvdgan"):
        raise VsynError(f"model.generator must be style_rnn or dvdgan, not {m.generator!r}")
    if m.head not in ("pixels", "motion"):
        raise VsynError(f"model.head must be pixels or motion, not {m.head!r}")
    if m.head == "motion" and m.generator != "style_rnn":
        raise VsynError("model.head=motion needs model.generator=style_rnn (the DVD-GAN-S baseline synthesises pixels)")
    if m.motion_field not in ("eulerian", "lagrangian"):
        raise VsynError(f"model.motion_field must be eulerian or lagrangian, not {m.motion_field!r}")
    if not m.max_speed > 0:
        raise VsynError(f"model.max_speed must be > 0, not {m.max_speed}")
    if m.head == "pixels" and (cfg.loss.motion_smooth or cfg.loss.motion_still or cfg.loss.motion_diversity):
        raise VsynError("loss.motion_smooth, loss.motion_still and loss.motion_diversity apply to model.head=motion only")
    if cfg.loss.motion_smooth < 0 or cfg.loss.motion_still < 0 or cfg.loss.motion_diversity < 0:
        raise VsynError("loss.motion_smooth, loss.motion_still and loss.motion_diversity must be >= 0")
    if cfg.eval.best_metric:  # refused now, not at the first snapshot hours into a run
        from vsyn.metrics.evaluate import check_selectable

        check_selectable(cfg.eval.best_metric)
    if m.gru_seed not in ("features", "tanh"):
        raise VsynError(f"model.gru_seed must be features or tanh, not {m.gru_seed!r}")
    if m.motion_encoder and not (m.latent_noise and m.generator == "style_rnn"):
        raise VsynError("model.motion_encoder needs model.latent_noise=true and model.generator=style_rnn")
    if cfg.loss.reconstruction < 0 or cfg.loss.kl < 0 or cfg.loss.adversarial_warmup_kimg < 0:
        raise VsynError("loss.reconstruction, loss.kl and loss.adversarial_warmup_kimg must be >= 0")
    if cfg.loss.reconstruction and not m.motion_encoder:
        raise VsynError("loss.reconstruction needs model.motion_encoder=true (the latent of a real clip comes from it)")
    if m.noise_to_style and not (m.latent_noise and m.generator == "style_rnn"):
        raise VsynError("model.noise_to_style needs model.latent_noise=true and model.generator=style_rnn")
    if m.gru_seed != "features" and m.generator != "style_rnn":
        raise VsynError("model.gru_seed applies to model.generator=style_rnn only")
    if cfg.loss.motion_diversity and not m.latent_noise:
        raise VsynError("loss.motion_diversity needs model.latent_noise=true (it pairs two latents per photo)")
    if cfg.loss.motion_diversity and (cfg.train.batch < 2 or cfg.train.batch % 2):
        raise VsynError(f"loss.motion_diversity needs an even train.batch >= 2 per process, not {cfg.train.batch}")
    if m.resolution < 32 or m.resolution & (m.resolution - 1):
        raise VsynError(f"model.resolution must be a power of two >= 32 (the critics' depth), not {m.resolution}")
    if m.dt_prepool and m.resolution < 64:
        raise VsynError("model.dt_prepool needs model.resolution >= 64 (the temporal critic halves it first)")
    if m.frames < 2:
        raise VsynError("model.frames must be >= 2 (frame 0 is the input)")
    if m.spatial_frames < 1 or m.spatial_frames > m.frames - 1:
        raise VsynError(f"model.spatial_frames must be in 1..frames-1 ({m.frames - 1})")
    if cfg.loss.kind not in ("wgan-gp", "hinge", "logistic"):
        raise VsynError(f"loss.kind must be wgan-gp, hinge or logistic, not {cfg.loss.kind!r}")
    if cfg.loss.penalty_precision not in ("fp32", "autocast"):
        raise VsynError(f"loss.penalty_precision must be fp32 or autocast, not {cfg.loss.penalty_precision!r}")
    if cfg.train.precision not in ("fp32", "bf16"):
        raise VsynError(f"train.precision must be fp32 or bf16, not {cfg.train.precision!r}")
    if cfg.train.compile_backend not in ("inductor", "aot_eager"):
        raise VsynError(f"train.compile_backend must be inductor or aot_eager, not {cfg.train.compile_backend!r}")
    if cfg.data.reading not in ("global", "per_rank"):
        raise VsynError(f"data.reading must be global or per_rank, not {cfg.data.reading!r}")
    if cfg.train.cudnn_benchmark_limit < 0:
        raise VsynError("train.cudnn_benchmark_limit must be >= 0 (0 times every algorithm)")
    if cfg.train.distributed not in ("ddp", "deepspeed"):
        raise VsynError(f"train.distributed must be ddp or deepspeed, not {cfg.train.distributed!r}")
    if cfg.train.batch < 1 or cfg.train.n_critic < 1:
        raise VsynError("train.batch and train.n_critic must be >= 1")
