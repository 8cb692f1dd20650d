"""The one typed configuration schema of clickseg.

A run is described by :class:`Config`, loaded from YAML and adjusted with
``key=value`` overrides (dotted keys, values parsed as YAML)::

    cfg = load_config("configs/demo.yaml", ["model.input_size=256", "clicks.mode=single_pos"])

Every key is checked against the dataclasses below: an unknown key, a value of
the wrong type or an impossible value raises :class:`ConfigError` naming the
key, before any data is read or any job is submitted.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from clickseg.architectures import ARCHITECTURES

LR_SCHEDULES = ("multistep", "cosine")
CLICK_MODES = ("multi", "single_pos", "single_any")
EXECUTORS = ("local", "slurm")
PATCH_SIZE = 16
# SegNext splits the token grid into windows of about 224 px (14 tokens) a side.
WINDOW_TOKENS = 14


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


@dataclass
class ModelConfig:
    arch: str = "vit_base_sax2"
    """Named architecture from ``clickseg.architectures.ARCHITECTURES``."""
    input_size: int = 1024
    """Side T of the square model input; images are resized to T x T."""
    pretrained: Optional[str] = None
    """Local path of MAE ViT weights (``{'model': state_dict}``) to initialise the image encoder."""


@dataclass
class DataConfig:
    train: str = ""
    """Shard directory (with manifest.json) of the training set."""
    eval: dict[str, str] = field(default_factory=dict)
    """Evaluation sets: name -> shard directory."""
    stuff_prob: float = 0.3
    """Probability that a sample's stuff regions are kept as training objects (SegNext: 0.3)."""
    min_object_area: int = 80
    """Objects smaller than this (pixels, after cropping) are not chosen for training."""
    scale_min: float = 0.75
    scale_max: float = 1.4
    num_workers: int = 0
    shuffle_buffer: int = 256
    cache_mb: float = 0
    """Keep decoded training samples in memory, up to this many MB per data-loading process (0: off).
    A dataset that fits is then read and decoded once per process, not once per pass."""


@dataclass
class ClickConfig:
    mode: str = "multi"
    """``multi``: several positive/negative clicks from the mask plus up to
    ``max_correction_clicks`` clicks simulated from the model's own prediction;
    ``single_pos``: exactly one positive click; ``single_any``: exactly one
    click, positive or negative, placed in the error region of a previous mask."""
    max_positive: int = 12
    max_negative: int = 12
    max_correction_clicks: int = 3
    negative_band: int = 40
    """Negative clicks are drawn from background pixels within this distance of the object."""


@dataclass
class TrainConfig:
    epochs: int = 90
    samples_per_epoch: int = 30000
    """An epoch is this many training samples, summed over all processes."""
    batch_size: int = 8
    """Per process."""
    lr: float = 5e-5
    weight_decay: float = 0.0
    lr_schedule: str = "multistep"
    """``multistep`` (SegNext: x ``lr_gamma`` at each epoch in ``lr_milestones``) or ``cosine`` (to 0 at the end)."""
    lr_milestones: list[int] = field(default_factory=lambda: [50, 55])
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimizer steps, then the schedule."""
    seed: int = 0
    num_processes: int = 1
    """Processes per node that ``accelerate launch`` starts (GPUs per node on a cluster)."""
    mixed_precision: str = "no"
    log_every: int = 10
    num_vis: int = 4
    """Sample images with clicks and predictions written to TensorBoard per epoch."""


EVAL_PROTOCOLS = ("center", "random")
EVAL_FLIPS = ("none", "h", "v", "hv")


@dataclass
class EvalConfig:
    n_clicks: int = 20
    threshold: float = 0.49
    """A pixel is object when its probability is strictly above this."""
    protocol: str = "center"
    """``center`` (the deterministic NoC clicker) or ``random`` (uniform clicks, ``draws`` per instance)."""
    draws: int = 1
    """Click draws per instance (the notes' ``--c``); averaged within an instance."""
    seed: int = 0
    """With the dataset, instance and draw, fixes every random click and jitter."""
    flips: str = "none"
    """Test-time flips: ``none``; ``h`` or ``v`` (identity + that flip); ``hv`` (identity, h, v and both)."""
    scaling: int = 1
    """Inference-time scaling K: prompt variants per user click (K - 1 jittered copies), probabilities averaged."""
    jitter_radius: int = 5
    """Jittered copies lie within this many pixels (original image) of the click, inside its region."""
    scaling_curve: list[int] = field(default_factory=list)
    """Also evaluate mIoU@1 for each K listed (e.g. [1, 2, 4, 8, 16]) with the seconds per image."""
    max_batch: int = 0
    """Most prompts decoded in one batched call; 0: 8 on CPU (larger batches are slower there:
    the head's stride-4 maps outgrow the caches, see bench/eval_batching.py), 64 on a GPU."""
    max_instances: int = 0
    """Evaluate only the first N instances of each set (0: all)."""


@dataclass
class ExecutorConfig:
    type: str = "local"
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 60 * 24
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 0
    array_parallelism: int = 16
    max_requeues: int = 3
    """How often a training job is requeued after Slurm's time-limit warning before it fails."""
    signal_delay_s: int = 120
    """Slurm sends its warning signal (USR2) this long before the time limit: enough to finish
    the current step and write the interrupt checkpoint."""
    additional: dict[str, str] = field(default_factory=dict)
    """Extra sbatch options, e.g. ``{constraint: a100}``."""


@dataclass
class Config:
    name: str = "run"
    run_dir: str = "runs/run"
    """Directory of this experiment: checkpoints, TensorBoard, results."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clicks: ClickConfig = field(default_factory=ClickConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


# --------------------------------------------------------------------------- building


def from_dict(data: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from nested ``data``, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{dotted}' (valid keys here: {close})")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(value if value is not None else {}, tp, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads ``1e-4`` (no dot) as a string
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if tp in (float, str) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}' expects {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        set_dotted(data, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{key}': '{part}' is not a section")
    node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load, override and validate a run config."""
    data = load_yaml(path) if path else {}
    data.pop("grid", None)  # a sweep file is also a valid base config
    data.pop("sweep", None)
    cfg = from_dict(apply_overrides(data, list(overrides)))
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- validation


def window_layout(input_size: int, patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """(windows per side, window side in tokens) of SegNext's window attention at ``input_size``."""
    grid = input_size // patch_size
    per_side = grid // WINDOW_TOKENS
    if per_side == 0 or grid % per_side:
        raise ConfigError(
            f"config key 'model.input_size': {input_size} gives a {grid}x{grid} token grid that cannot be split "
            f"into equal windows of about {WINDOW_TOKENS} tokens (need grid >= {WINDOW_TOKENS} and divisible "
            f"by grid // {WINDOW_TOKENS}); try 224, 256, 448, 512 or 1024")
    return per_side, grid // per_side


def validate(cfg: Config) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}': {msg}")

    m = cfg.model
    need(m.arch in ARCHITECTURES, "model.arch", f"unknown architecture {m.arch!r}; known: {sorted(ARCHITECTURES)}")
    patch = ARCHITECTURES[m.arch].patch_size
    need(m.input_size > 0 and m.input_size % patch == 0, "model.input_size",
         f"{m.input_size} must be a positive multiple of {m.arch}'s patch size {patch}")
    if ARCHITECTURES[m.arch].uses_windows:
        window_layout(m.input_size, patch)
    need(cfg.clicks.mode in CLICK_MODES, "clicks.mode", f"unknown click mode {cfg.clicks.mode!r}; one of {CLICK_MODES}")
    need(cfg.clicks.max_positive >= 1, "clicks.max_positive", "must be >= 1")
    need(cfg.clicks.max_negative >= 0, "clicks.max_negative", "must be >= 0")
    need(cfg.clicks.max_correction_clicks >= 0, "clicks.max_correction_clicks", "must be >= 0")
    need(0.0 <= cfg.data.stuff_prob <= 1.0, "data.stuff_prob", "must be in [0, 1]")
    need(0 < cfg.data.scale_min <= cfg.data.scale_max, "data.scale_min", "need 0 < scale_min <= scale_max")
    need(cfg.data.cache_mb >= 0, "data.cache_mb", "must be >= 0 (0: no cache)")
    t = cfg.train
    need(t.epochs >= 1, "train.epochs", "must be >= 1")
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.samples_per_epoch >= t.batch_size * t.num_processes, "train.samples_per_epoch",
         "must be at least one batch on every process")
    need(t.lr > 0, "train.lr", "must be > 0")
    need(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule", f"one of {LR_SCHEDULES}")
    need(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    need(t.num_processes >= 1, "train.num_processes", "must be >= 1")
    need(t.mixed_precision in ("no", "fp16", "bf16"), "train.mixed_precision", "one of no, fp16, bf16")
    e = cfg.eval
    need(e.n_clicks >= 1, "eval.n_clicks", "must be >= 1")
    need(0.0 <= e.threshold < 1.0, "eval.threshold", "must be in [0, 1)")
    need(e.protocol in EVAL_PROTOCOLS, "eval.protocol", f"unknown protocol {e.protocol!r}; one of {EVAL_PROTOCOLS}")
    need(e.draws >= 1, "eval.draws", "must be >= 1")
    need(e.seed >= 0, "eval.seed", "must be >= 0")
    need(e.flips in EVAL_FLIPS, "eval.flips", f"unknown flips {e.flips!r}; one of {EVAL_FLIPS}")
    need(e.scaling >= 1, "eval.scaling", "must be >= 1")
    need(e.jitter_radius >= 0, "eval.jitter_radius", "must be >= 0")
    need(all(k >= 1 for k in e.scaling_curve), "eval.scaling_curve", "every K must be >= 1")
    need(e.max_batch >= 0, "eval.max_batch", "must be >= 0 (0: chosen by device)")
    need(e.max_instances >= 0, "eval.max_instances", "must be >= 0")
    need(cfg.executor.type in EXECUTORS, "executor.type", f"one of {EXECUTORS}")
    need(cfg.executor.nodes >= 1, "executor.nodes", "must be >= 1")
    need(cfg.executor.max_requeues >= 0, "executor.max_requeues", "must be >= 0")
    need(cfg.executor.gpus_per_node in (0, t.num_processes), "train.num_processes",
         f"must equal executor.gpus_per_node ({cfg.executor.gpus_per_node}): one training process per GPU")
    need(0 < cfg.executor.signal_delay_s < 60 * cfg.executor.time_min or cfg.executor.type == "local",
         "executor.signal_delay_s", f"must be > 0 and below the time limit ({60 * cfg.executor.time_min} s)")
    need(cfg.executor.array_parallelism >= 1, "executor.array_parallelism", "must be >= 1")
    need(bool(cfg.name) and "/" not in cfg.name, "name", "must be a non-empty name without '/'")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
