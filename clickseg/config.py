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

from clickseg.architectures import ARCHITECTURES, window_layout

LR_SCHEDULES = ("multistep", "cosine")
OPTIMIZERS = ("adam", "adamw")
IMAGE_DRAWS = ("with_replacement", "once_per_pass")
CLICK_MODES = ("multi", "single_pos", "single_any")
EXECUTORS = ("local", "slurm")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {msg}")


@dataclass
class ModelConfig:
    arch: str = "vit_base_sax2"
    """Named architecture from ``clickseg.architectures.ARCHITECTURES``."""
    input_size: int = 1024
    """Side T of the square model input; images are resized to T x T."""
    pretrained: Optional[str] = None
    """Local path of MAE ViT weights (``{'model': state_dict}``) to initialise the image encoder."""
    pos_embed_antialias: bool = False
    """Resize the MAE position embedding to the token grid with antialiasing (SegNext: bicubic without)."""


@dataclass
class DataConfig:
    """Where the data is, and how training samples are drawn and prepared (SegNext's values)."""

    train: str = ""
    """Shard directory (with manifest.json) of the training set."""
    eval: dict[str, str] = field(default_factory=dict)
    """Evaluation sets: name -> shard directory."""
    image_draw: str = "with_replacement"
    """``with_replacement`` (SegNext: every sample draws an image uniformly at random, so an image
    appears a Poisson(1) number of times per pass) or ``once_per_pass`` (every image once per pass)."""
    stuff_prob: float = 0.3
    """Per image: probability that stuff regions are root objects (else they are erased to background)."""
    keep_background_prob: float = 0.05
    """When augmentation leaves no object pixel, keep the sample anyway with this probability
    (an empty target, negative clicks only); otherwise augment the image again."""
    min_object_area: int = 1000
    """Objects smaller than this (pixels at the input size T, after augmentation) are removed
    before the target is chosen; the children of a removed object go to its parent."""
    merge_objects_prob: float = 0.15
    """With two or more root objects, the target is the union of several with this probability."""
    max_merged_objects: int = 2
    """A merged target unites 2 to this many distinct root objects."""
    num_workers: int = 0
    """Data-loading worker processes per training process (0: in the training process). They live
    for the whole training: one DataLoader serves every epoch, with the same batches as a loader
    made anew per epoch (``clickseg.data.stream.EpochSequence``)."""
    prefetch_batches: int = 2
    """Batches each worker prepares ahead (the DataLoader's ``prefetch_factor``), across epoch ends."""
    shuffle_buffer: int = 256
    cache_mb: float = 0
    """Keep decoded training samples in memory, up to this many MB per data-loading process (0: off).
    A dataset that fits is then read and decoded once per process, not once per pass."""


@dataclass
class AugmentConfig:
    """SegNext's training augmentation, in its order (probabilities per sample). The geometric
    steps are applied as one affine warp, the colour steps as one lookup table; see
    ``clickseg/data/augment.py``."""

    scale_min: float = 0.75
    scale_max: float = 1.4
    """UniformRandomResize: both sides scaled by one factor uniform in [scale_min, scale_max]."""
    flip_prob: float = 0.5
    """Flip: horizontal, vertical or both, a third of the time each."""
    rotate90_prob: float = 0.5
    """RandomRotate90: 0, 1, 2 or 3 quarter turns, uniform."""
    shift_rotate_prob: float = 0.75
    shift_limit: float = 0.03
    """ShiftScaleRotate: shift uniform in +-shift_limit of each side."""
    rotate_limit: float = 3.0
    """ShiftScaleRotate: rotation uniform in +-rotate_limit degrees (no scale change; border 0)."""
    brightness_contrast_prob: float = 0.75
    brightness_limit: list[float] = field(default_factory=lambda: [-0.25, 0.25])
    """RandomBrightnessContrast: add a value uniform in this range times 255."""
    contrast_limit: list[float] = field(default_factory=lambda: [-0.15, 0.4])
    """RandomBrightnessContrast: multiply by 1 + a value uniform in this range."""
    rgb_shift_prob: float = 0.75
    rgb_shift_limit: float = 10.0
    """RGBShift: each channel shifted by a value uniform in +-rgb_shift_limit."""


@dataclass
class ClickConfig:
    """Training clicks: SegNext's MultiPointSampler and its correction clicks (its values)."""

    mode: str = "multi"
    """``multi``: SegNext's sampler (several positive and negative clicks) plus up to
    ``max_correction_clicks`` clicks simulated from the model's own prediction;
    ``single_pos``: exactly one positive click (SegNext's positive rule);
    ``single_any``: exactly one click, positive or negative: half of the samples get the
    positive click, the other half a click placed by the correction rule in the error of the
    model's prediction for that positive click, which becomes the previous mask."""
    max_positive: int = 24
    """Positive clicks: 1 + i, i in 0..max_positive-1 with P(i) proportional to prob_gamma^i.
    Rows 0..max_positive-1 of the click array hold them (SegNext's num_max_points)."""
    max_negative: int = 24
    """Negative clicks: i in 0..max_negative with P(i) proportional to prob_gamma^i; the next rows."""
    prob_gamma: float = 0.8
    positive_erode_prob: float = 0.9
    """Positive clicks come from the target eroded (3x3 kernel) with this probability, when more
    than 10 pixels remain."""
    positive_erode_iters: int = 3
    negative_border_prob: float = 0.5
    """Each negative click: from the border ring around the target with this probability ..."""
    negative_other_prob: float = 0.4
    """... from other objects' pixels with this one ..."""
    negative_bg_prob: float = 0.1
    """... or from anywhere outside the target (the three must sum to 1)."""
    border_expand_ratio: float = 0.1
    """The border ring is the target dilated by ceil(ratio * sqrt(area)) 3x3 iterations, minus the target."""
    max_correction_clicks: int = 3
    """``multi``: per batch, n uniform in 0..max_correction_clicks clicks from the model's errors."""
    threshold: float = 0.49
    """Correction clicks: false negative where probability < threshold, false positive where > threshold."""


@dataclass
class TrainConfig:
    epochs: int = 100
    samples_per_epoch: int = 30000
    """An epoch is this many training samples, summed over all processes."""
    batch_size: int = 16
    """Per process (SegNext: 16 in all, 4 GPUs x 4)."""
    optimizer: str = "adam"
    """``adam`` (SegNext; ``weight_decay`` added to the gradient) or ``adamw`` (decoupled weight decay)."""
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: str = "multistep"
    """``multistep`` (SegNext: x ``lr_gamma`` at each epoch in ``lr_milestones``) or ``cosine`` (to 0 at the end)."""
    lr_milestones: list[int] = field(default_factory=lambda: [50, 90])
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimizer steps, then the schedule."""
    seed: int = 0
    num_processes: int = 1
    """Processes per node that ``accelerate launch`` starts (GPUs per node on a cluster)."""
    mixed_precision: str = "no"
    """``no`` (SegNext: fp32), ``bf16`` (autocast, on CPU too) or ``fp16`` (CUDA only, with loss scaling)."""
    compile: bool = False
    """``torch.compile`` the image encoder, prompt encoder and decoder in place (the click
    simulation stays eager); checkpoints are the same either way."""
    max_nonfinite_steps: int = 3
    """A step whose gradient is not finite (a NaN or inf loss) is skipped and logged with its
    samples; this many in a row stop the training (the last checkpoint is its last good state).
    0: every step is applied, as in SegNext's trainer (one non-finite gradient then makes the
    weights NaN). Runs whose gradients stay finite are the same either way."""
    log_every: int = 10
    num_vis: int = 4
    """Sample images with clicks and predictions written to TensorBoard per epoch."""


EVAL_PROTOCOLS = ("center", "random")
EVAL_FLIPS = ("none", "h", "v", "hv")


@dataclass
class EvalConfig:
    """Every evaluation option, as the evaluator (``clickseg.eval``) takes it; checked when built
    (also by ``dataclasses.replace``), so an invalid one never reaches an evaluation."""

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
    target_iou: float = 0.0
    """SegNext's ``--target-iou``: a draw of an instance stops clicking at the first click whose IoU
    reaches this, and its later IoUs repeat that one (the user keeps the mask); 0: off, all
    ``n_clicks`` run. NoC@t and NoF@t for every t <= target_iou equal those of a full run;
    mIoU@k and NoC@t for t > target_iou do not."""

    def __post_init__(self):
        _check_eval(self)


def _check_eval(e: EvalConfig) -> None:
    _need(e.n_clicks >= 1, "eval.n_clicks", "must be >= 1")
    _need(0.0 <= e.threshold < 1.0, "eval.threshold", "must be in [0, 1)")
    _need(e.protocol in EVAL_PROTOCOLS, "eval.protocol", f"unknown protocol {e.protocol!r}; one of {EVAL_PROTOCOLS}")
    _need(e.draws >= 1, "eval.draws", "must be >= 1")
    _need(e.seed >= 0, "eval.seed", "must be >= 0")
    _need(e.flips in EVAL_FLIPS, "eval.flips", f"unknown flips {e.flips!r}; one of {EVAL_FLIPS}")
    _need(e.scaling >= 1, "eval.scaling", "must be >= 1")
    _need(e.jitter_radius >= 0, "eval.jitter_radius", "must be >= 0")
    _need(all(k >= 1 for k in e.scaling_curve), "eval.scaling_curve", "every K must be >= 1")
    _need(e.max_batch >= 0, "eval.max_batch", "must be >= 0 (0: chosen by device)")
    _need(e.max_instances >= 0, "eval.max_instances", "must be >= 0")
    _need(0.0 <= e.target_iou <= 1.0, "eval.target_iou", "must be in [0, 1] (0: off)")


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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
    if tp is str and isinstance(value, bool):
        return "yes" if value else "no"  # YAML 1.1 reads a bare no/off (yes/on) as a boolean
    if tp in (float, str) and not isinstance(value, tp):
        raise ConfigError(f"config key '{key}' expects {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> {dotted key: value parsed as YAML}; malformed or repeated keys are refused."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        if key in parsed:
            raise ConfigError(f"override key '{key}' is given more than once on the command line")
        try:
            parsed[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override '{item}': the value of '{key}' is not valid YAML ({e})") from None
    return parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (values parsed as YAML)."""
    for key, value in parse_overrides(overrides).items():
        set_dotted(data, key, value)
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


def validate(cfg: Config) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key."""
    m = cfg.model
    _need(m.arch in ARCHITECTURES, "model.arch", f"unknown architecture {m.arch!r}; known: {sorted(ARCHITECTURES)}")
    patch = ARCHITECTURES[m.arch].patch_size
    _need(m.input_size > 0 and m.input_size % patch == 0, "model.input_size",
          f"{m.input_size} must be a positive multiple of {m.arch}'s patch size {patch}")
    if ARCHITECTURES[m.arch].uses_windows:
        try:
            window_layout(m.input_size, patch)
        except ValueError as e:
            raise ConfigError(f"config key 'model.input_size': {e}") from None
    _need(cfg.clicks.mode in CLICK_MODES, "clicks.mode",
          f"unknown click mode {cfg.clicks.mode!r}; one of {CLICK_MODES}")
    _validate_recipe(cfg)
    t = cfg.train
    _need(t.epochs >= 1, "train.epochs", "must be >= 1")
    _need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _need(t.samples_per_epoch >= t.batch_size * t.num_processes, "train.samples_per_epoch",
          "must be at least one batch on every process")
    _need(t.lr > 0, "train.lr", "must be > 0")
    _need(t.optimizer in OPTIMIZERS, "train.optimizer", f"one of {OPTIMIZERS}")
    _need(len(t.betas) == 2 and all(0.0 <= b < 1.0 for b in t.betas), "train.betas", "two values in [0, 1)")
    _need(t.eps > 0, "train.eps", "must be > 0")
    _need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _need(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule", f"one of {LR_SCHEDULES}")
    _need(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _need(t.max_nonfinite_steps >= 0, "train.max_nonfinite_steps", "must be >= 0 (0: apply every step, as SegNext)")
    _need(t.num_processes >= 1, "train.num_processes", "must be >= 1")
    _need(t.mixed_precision in ("no", "fp16", "bf16"), "train.mixed_precision", "one of no, fp16, bf16")
    _check_eval(cfg.eval)
    _need(cfg.executor.type in EXECUTORS, "executor.type", f"one of {EXECUTORS}")
    _need(cfg.executor.nodes >= 1, "executor.nodes", "must be >= 1")
    _need(cfg.executor.max_requeues >= 0, "executor.max_requeues", "must be >= 0")
    _need(cfg.executor.gpus_per_node in (0, t.num_processes), "train.num_processes",
          f"must equal executor.gpus_per_node ({cfg.executor.gpus_per_node}): one training process per GPU")
    _need(0 < cfg.executor.signal_delay_s < 60 * cfg.executor.time_min or cfg.executor.type == "local",
          "executor.signal_delay_s", f"must be > 0 and below the time limit ({60 * cfg.executor.time_min} s)")
    _need(cfg.executor.array_parallelism >= 1, "executor.array_parallelism", "must be >= 1")
    _need(bool(cfg.name) and "/" not in cfg.name, "name", "must be a non-empty name without '/'")


def _validate_recipe(cfg: Config) -> None:
    """The data, augmentation and click keys of the training recipe."""
    d, a, c = cfg.data, cfg.augment, cfg.clicks
    probs = {"data.stuff_prob": d.stuff_prob, "data.keep_background_prob": d.keep_background_prob,
             "data.merge_objects_prob": d.merge_objects_prob, "augment.flip_prob": a.flip_prob,
             "augment.rotate90_prob": a.rotate90_prob, "augment.shift_rotate_prob": a.shift_rotate_prob,
             "augment.brightness_contrast_prob": a.brightness_contrast_prob,
             "augment.rgb_shift_prob": a.rgb_shift_prob, "clicks.positive_erode_prob": c.positive_erode_prob,
             "clicks.negative_border_prob": c.negative_border_prob,
             "clicks.negative_other_prob": c.negative_other_prob, "clicks.negative_bg_prob": c.negative_bg_prob}
    for key, p in probs.items():
        _need(0.0 <= p <= 1.0, key, f"{p} is not a probability in [0, 1]")
    _need(d.image_draw in IMAGE_DRAWS, "data.image_draw", f"unknown draw {d.image_draw!r}; one of {IMAGE_DRAWS}")
    _need(d.min_object_area >= 0, "data.min_object_area", "must be >= 0")
    _need(d.max_merged_objects >= 2, "data.max_merged_objects", "must be >= 2 (a merged target unites 2 or more)")
    _need(d.cache_mb >= 0, "data.cache_mb", "must be >= 0 (0: no cache)")
    _need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _need(d.prefetch_batches >= 1, "data.prefetch_batches", "must be >= 1")
    _need(d.shuffle_buffer >= 1, "data.shuffle_buffer", "must be >= 1")
    _need(0 < a.scale_min <= a.scale_max, "augment.scale_min", "need 0 < scale_min <= scale_max")
    _need(0.0 <= a.shift_limit < 0.5, "augment.shift_limit", "must be in [0, 0.5)")
    _need(0.0 <= a.rotate_limit <= 180.0, "augment.rotate_limit", "must be in [0, 180] degrees")
    for key, lim in (("augment.brightness_limit", a.brightness_limit), ("augment.contrast_limit", a.contrast_limit)):
        _need(len(lim) == 2 and lim[0] <= lim[1], key, f"{lim} must be [low, high] with low <= high")
    _need(a.contrast_limit[0] > -1.0, "augment.contrast_limit", "low must be > -1 (the factor is 1 + value)")
    _need(a.rgb_shift_limit >= 0, "augment.rgb_shift_limit", "must be >= 0")
    _need(c.max_positive >= 1, "clicks.max_positive", "must be >= 1")
    _need(c.max_negative >= 0, "clicks.max_negative", "must be >= 0")
    _need(0.0 < c.prob_gamma, "clicks.prob_gamma", "must be > 0")
    _need(c.positive_erode_iters >= 0, "clicks.positive_erode_iters", "must be >= 0")
    _need(c.border_expand_ratio >= 0, "clicks.border_expand_ratio", "must be >= 0")
    total = c.negative_border_prob + c.negative_other_prob + c.negative_bg_prob
    _need(abs(total - 1.0) < 1e-6, "clicks.negative_border_prob",
          f"negative_border_prob + negative_other_prob + negative_bg_prob must be 1, got {total:g}")
    _need(c.max_correction_clicks >= 0, "clicks.max_correction_clicks", "must be >= 0")
    # Correction click i goes to row max_positive - i (positive) or the i-th last row (negative).
    _need(c.mode != "multi" or c.max_correction_clicks <= min(c.max_positive, c.max_negative),
          "clicks.max_correction_clicks", f"must be <= clicks.max_positive ({c.max_positive}) and "
          f"clicks.max_negative ({c.max_negative}): correction clicks take the last rows of each half")
    _need(0.0 < c.threshold < 1.0, "clicks.threshold", "must be in (0, 1)")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
