"""The experiment configuration: one YAML file (``experiments/<name>.yaml``) says everything a benchmark run does.

``load_experiment("paper", ["finetune.steps=100"])`` reads the file, applies ``key.sub=value`` overrides (values
parsed as YAML scalars, so ``w_grid=[1.0,2.0]`` and ``tracking.wandb.enabled=false`` work), and validates all of
it before any long work starts. Every mistake is one ``ConfigError`` line that names the fix.

Every field has a default; the defaults are the paper's protocol (Zhong et al., ICLR 2025: DiT-XL/2 fine-tuned for
24k steps at batch 32, 50 sampling steps, 10k samples, FID and FD_DINOv2). Only ``datasets`` must be given.
A file may start from another with ``base: <name or path>``: mappings merge key by key, lists are replaced.

Relative paths in a config (``source.checkpoint``, ``autoencoder`` as a directory, ``data_root``) are relative to
the repository root, so an experiment means the same thing from any working directory.

Stage identities: ``Experiment.stage_config(stage, dataset, ...)`` returns only the settings that determine one
stage's output (fine-tune < sample < evaluate), so changing, say, the number of samples re-samples but does not
re-fine-tune. Hash it with ``benchmark.io.config_hash`` (or ``Experiment.stage_hash``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, Union

import yaml

from benchmark.cli import UserError
from benchmark.guidance import GuidanceInterval, METHODS, W_MAX, W_MIN, check_guidance_scale
from benchmark.io import REPO_ROOT, config_hash, data_root, results_root

EXPERIMENTS_DIR = REPO_ROOT / "experiments"

# A metric name in ``evaluation.metrics`` -> the columns it writes to runs.csv. The FD metrics are distances
# (lower is better); precision/recall/density/coverage (Naeem et al., 2020) are higher-is-better.
METRIC_COLUMNS = {
    "fid": ("fid",),
    "fd_dinov2": ("fd_dinov2",),
    "prdc": ("precision", "recall", "density", "coverage"),
    "fd_effnet": ("fd_effnet",),
    # PRDC in the offline EfficientNet-Lite0 space (the small CPU benchmark has no DINOv2 weights)
    "prdc_effnet": ("precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet"),
}
FD_METRICS = ("fid", "fd_dinov2", "fd_effnet")
HIGHER_IS_BETTER = ("precision", "recall", "density", "coverage",
                    "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet")

AUTOENCODERS = ("sd-vae-ft-ema", "sd-vae-ft-mse", "identity")  # or a local diffusers AutoencoderKL directory
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")  # Lightning's names
REF_SPLITS = ("train", "test", "all")
SWEEP_SAMPLERS = ("tpe", "random", "grid", "qmc")
WANDB_MODES = ("auto", "online", "offline", "disabled")  # auto: online with credentials, else offline
STAGES = ("latents", "finetune", "sample", "evaluate")
W_DECIMALS = 4  # w values are rounded to this many decimals, so 1.0 + 3 * 0.1 is exactly 1.3 everywhere


class ConfigError(UserError, ValueError):
    """A bad experiment config; the message is one line that names the fix. (Also a ValueError, so any caller
    that treats bad values as user errors prints it as one line too.)"""


# ----------------------------------------------------------------------------------------------------------------
# Value checks. Each takes the dotted key so that the message says exactly which setting to change.


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _int(value: Any, key: str, low: Optional[int] = 1) -> int:
    # YAML reads "1e4" as a string and "24_000" as an int; accept any spelling of a whole number
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a whole number, got {_describe(value)}; e.g. {key}=100")
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key} must be a whole number, got {value!r}; e.g. {key}=100") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{key} must be a whole number, got {value}; e.g. {key}={int(value) or 1}")
        value = int(value)
    if not isinstance(value, int):
        raise ConfigError(f"{key} must be a whole number, got {_describe(value)}; e.g. {key}=100")
    if low is not None and value < low:
        what = "positive" if low == 1 else f">= {low}"
        raise ConfigError(f"{key}={value} must be {what}; set {key} to a whole number >= {low}")
    return value


def _float(value: Any, key: str, low: float = -math.inf, high: float = math.inf, open_low: bool = False,
           open_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key} must be a number, got {_describe(value)}")
    try:
        value = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}; write e.g. {key}=1.0e-4") from None
    below = value <= low if open_low else value < low
    above = value >= high if open_high else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ConfigError(f"{key}={value} is outside {interval}; set {key} to a value in {interval}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
    return value


def _str(value: Any, key: str, choices: Optional[Sequence[str]] = None) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a name like "32" or a version read as a number
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {_describe(value)}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}{_did_you_mean(value, choices)}")
    return value


def _optional(check, value: Any, key: str, **kwargs):
    return None if value is None else check(value, key, **kwargs)


def _list(value: Any, key: str, item, unique: bool = True, nonempty: bool = True, **kwargs) -> list:
    if value is None:
        value = []
    if not isinstance(value, (list, tuple)):
        value = [value]  # datasets=cub100-32 on the command line means a list of one
    items = [item(v, f"{key}[{i}]", **kwargs) for i, v in enumerate(value)]
    if nonempty and not items:
        raise ConfigError(f"{key} is empty; give at least one value, e.g. {key}=[...]")
    if unique:
        duplicates = sorted({str(v) for v in items if items.count(v) > 1})
        if duplicates:
            raise ConfigError(f"{key} lists {', '.join(duplicates)} more than once; remove the duplicates")
    return items


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


# ----------------------------------------------------------------------------------------------------------------
# Sections. Each dataclass validates and normalizes its fields in __post_init__, so that a config built in code
# is checked exactly like one read from YAML. ``KEY`` is the section's dotted name, used in messages.


@dataclass
class SourceConfig:
    """The pre-trained model that is fine-tuned (the DoG guide)."""

    KEY: ClassVar[str] = "source"
    # path (relative to the repo root) or a release name that benchmark.models resolves (e.g. DiT-XL-2-256x256.pt)
    checkpoint: str = "DiT-XL-2-256x256.pt"
    # a named DiT config (DiT-XL/2, DiT-S/4, DiT-N/2, ...) or a dict of DiT constructor arguments
    model: Union[str, dict] = "DiT-XL/2"
    # classes of the source model; its null (unconditional) label is this number
    num_classes: int = 1000
    # image side in pixels (the latent side is image_size / 8 with a VAE)
    image_size: int = 256

    def __post_init__(self):
        self.checkpoint = _str(self.checkpoint, f"{self.KEY}.checkpoint")
        if isinstance(self.model, dict):
            self.model = _check_model_args(self.model, f"{self.KEY}.model")
        else:
            self.model = _str(self.model, f"{self.KEY}.model")
            names = _known_model_names()
            if names is not None and self.model not in names:
                raise ConfigError(f"{self.KEY}.model={self.model!r} is not a known DiT config"
                                  f"{_did_you_mean(self.model, names)} (known: {', '.join(names)}; or give a dict of DiT arguments)")
        self.num_classes = _int(self.num_classes, f"{self.KEY}.num_classes")
        self.image_size = _int(self.image_size, f"{self.KEY}.image_size")


@dataclass
class FinetuneConfig:
    """Fine-tuning the source model on a target dataset (AdamW, EMA, label dropout for CFG's null label)."""

    KEY: ClassVar[str] = "finetune"
    steps: int = 24000              # optimizer steps
    global_batch_size: int = 32     # images per step, summed over all devices
    lr: float = 1.0e-4              # AdamW learning rate, constant
    weight_decay: float = 0.0       # AdamW weight decay
    ema_decay: float = 0.9999       # EMA of the weights, used for sampling
    label_dropout: float = 0.1      # probability that a label is replaced by the null label K (trains CFG's guide)
    precision: str = "bf16-mixed"   # Lightning precision: 32-true, bf16-mixed, 16-mixed, bf16-true
    checkpoint_every: int = 2000    # steps between resumable checkpoints
    num_workers: int = 4            # data-loader processes
    seed: int = 0                   # seed of the data order, label dropout and any newly initialized weights

    def __post_init__(self):
        k = self.KEY
        self.steps = _int(self.steps, f"{k}.steps")
        self.global_batch_size = _int(self.global_batch_size, f"{k}.global_batch_size")
        self.lr = _float(self.lr, f"{k}.lr", 0.0, 1.0, open_low=True)
        self.weight_decay = _float(self.weight_decay, f"{k}.weight_decay", 0.0)
        self.ema_decay = _float(self.ema_decay, f"{k}.ema_decay", 0.0, 1.0, open_high=True)
        self.label_dropout = _float(self.label_dropout, f"{k}.label_dropout", 0.0, 1.0)
        self.precision = _str(self.precision, f"{k}.precision", PRECISIONS)
        self.checkpoint_every = _int(self.checkpoint_every, f"{k}.checkpoint_every")
        self.num_workers = _int(self.num_workers, f"{k}.num_workers", low=0)
        self.seed = _int(self.seed, f"{k}.seed", low=0)


@dataclass
class SamplingConfig:
    """Generating the evaluation samples (the seed list is the top-level ``seeds``)."""

    KEY: ClassVar[str] = "sampling"
    num_samples: int = 10000        # images per (dataset, method, w, seed); labels uniform over the target classes
    steps: int = 50                 # sampling steps (the 1000 training steps respaced)
    batch_size: int = 256           # images per forward pass, per device
    guided_channels: Optional[int] = 3   # guide only the first N eps channels as the DiT reference does; null = all
    clip_denoised: bool = False     # clip the predicted x0 to [-1, 1] at every step (DiT does not for latents)
    guidance_interval: Optional[list] = None  # [low, high] timesteps (0..999) where guidance is applied; null = all

    def __post_init__(self):
        k = self.KEY
        self.num_samples = _int(self.num_samples, f"{k}.num_samples")
        self.steps = _int(self.steps, f"{k}.steps")
        self.batch_size = _int(self.batch_size, f"{k}.batch_size")
        self.guided_channels = _optional(_int, self.guided_channels, f"{k}.guided_channels")
        self.clip_denoised = _bool(self.clip_denoised, f"{k}.clip_denoised")
        if self.guidance_interval is not None:
            try:
                interval = GuidanceInterval.parse(self.guidance_interval)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{k}.guidance_interval: {str(e).splitlines()[0]}") from None
            self.guidance_interval = [interval.low, interval.high]


@dataclass
class EvaluationConfig:
    """Metrics between the samples and the target's real images."""

    KEY: ClassVar[str] = "evaluation"
    metrics: list = field(default_factory=lambda: ["fid", "fd_dinov2"])  # any of fid, fd_dinov2, prdc, fd_effnet
    ref_split: str = "all"          # real images for the reference statistics: train, test or all
    batch_size: int = 256           # images per feature-network forward pass
    select_by: str = "fid"          # the metric column that picks each method's best w (fid, fd_dinov2, fd_effnet,
                                    # precision, recall, density, coverage); must be one the metrics produce

    def __post_init__(self):
        k = self.KEY
        self.metrics = _list(self.metrics, f"{k}.metrics", _str, choices=tuple(METRIC_COLUMNS))
        self.ref_split = _str(self.ref_split, f"{k}.ref_split", REF_SPLITS)
        self.batch_size = _int(self.batch_size, f"{k}.batch_size")
        columns = self.columns()
        self.select_by = _str(self.select_by, f"{k}.select_by")
        if self.select_by not in columns:
            raise ConfigError(f"{k}.select_by={self.select_by!r} is not produced by {k}.metrics={self.metrics}"
                              f"{_did_you_mean(self.select_by, columns)}; choose one of {', '.join(columns)}")

    def columns(self) -> list[str]:
        """The runs.csv metric columns these metrics fill, in order."""
        return [c for m in self.metrics for c in METRIC_COLUMNS[m]]


@dataclass
class SweepConfig:
    """The Optuna search over w (``dogbench sweep``): many cheap low-fidelity trials, then the full evaluation."""

    KEY: ClassVar[str] = "sweep"
    sampler: str = "tpe"            # Optuna sampler: tpe, random, grid (over w_grid), qmc
    trials: int = 20                # trials per (dataset, method)
    low_fidelity_samples: int = 1000  # images per trial (capped at sampling.num_samples)
    storage: Optional[str] = None   # Optuna storage URL (sqlite:///..., postgresql://..., mysql://...);
                                    # null = sqlite file results/<name>/sweep.db
    w_range: Optional[list] = None  # [low, high] searched; null = the span of w_grid
    seed: int = 0                   # sampler seed

    def __post_init__(self):
        k = self.KEY
        self.sampler = _str(self.sampler, f"{k}.sampler", SWEEP_SAMPLERS)
        self.trials = _int(self.trials, f"{k}.trials")
        self.low_fidelity_samples = _int(self.low_fidelity_samples, f"{k}.low_fidelity_samples")
        self.storage = _optional(_str, self.storage, f"{k}.storage")
        if self.w_range is not None:
            if not isinstance(self.w_range, (list, tuple)) or len(self.w_range) != 2:
                raise ConfigError(f"{k}.w_range must be [low, high], e.g. {k}.w_range=[1.0,3.0], got {self.w_range!r}")
            low, high = (_w(v, f"{k}.w_range") for v in self.w_range)
            if low >= high:
                raise ConfigError(f"{k}.w_range={[low, high]} is empty; give [low, high] with low < high")
            self.w_range = [low, high]
        self.seed = _int(self.seed, f"{k}.seed", low=0)


@dataclass
class WandbConfig:
    """Weights & Biases logging. It never makes a run fail: a failed start is one warning line."""

    KEY: ClassVar[str] = "tracking.wandb"
    enabled: bool = True
    mode: str = "auto"              # auto (online with credentials, else offline), online, offline, disabled;
                                    # offline runs are written to results/<name>/wandb (upload: wandb sync DIR)
    project: str = "dogbench"
    entity: Optional[str] = None    # W&B user or team; null = the account's default

    def __post_init__(self):
        k = self.KEY
        self.enabled = _bool(self.enabled, f"{k}.enabled")
        self.mode = _str(self.mode, f"{k}.mode", WANDB_MODES)
        self.project = _str(self.project, f"{k}.project")
        self.entity = _optional(_str, self.entity, f"{k}.entity")


@dataclass
class TrackingConfig:
    KEY: ClassVar[str] = "tracking"
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        if isinstance(self.wandb, dict):
            self.wandb = _build(WandbConfig, self.wandb, WandbConfig.KEY)


def _w(value: Any, key: str) -> float:
    """A guidance scale: a finite number in benchmark.guidance's [W_MIN, W_MAX], rounded to W_DECIMALS."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key} must be a number in [{W_MIN}, {W_MAX}], got {_describe(value)}")
    try:
        return round(check_guidance_scale(value), W_DECIMALS)
    except ValueError as e:
        raise ConfigError(f"{key}: {str(e).splitlines()[0].replace('pass e.g. --w 1.5', 'use e.g. 1.5')}") from None


def _w_grid(value: Any, key: str = "w_grid") -> Union[list, dict]:
    """Either an explicit list of w, or {start, stop, step} (stop included). Returned normalized."""
    if isinstance(value, dict):
        expected = {"start", "stop", "step"}
        if set(value) != expected:
            unknown, missing = sorted(map(str, set(value) - expected)), sorted(expected - set(value))
            close = difflib.get_close_matches(unknown[0], missing or sorted(expected), n=1, cutoff=0.5) if unknown else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problem = f"unknown key {key}.{unknown[0]}{hint}" if unknown else f"missing {key}.{missing[0]}"
            raise ConfigError(f"{key}: {problem}; write {key}: {{start: 1.0, stop: 2.5, step: 0.1}} or a list [1.0, 1.5, 2.0]")
        start, stop = _w(value["start"], f"{key}.start"), _w(value["stop"], f"{key}.stop")
        step = _float(value["step"], f"{key}.step", 0.0, W_MAX, open_low=True)
        if stop < start:
            raise ConfigError(f"{key}.stop={stop} is below {key}.start={start}; swap them")
        if round(step, W_DECIMALS) == 0:
            raise ConfigError(f"{key}.step={step} rounds to 0 at {W_DECIMALS} decimals; use a step >= 0.0001")
        return {"start": start, "stop": stop, "step": step}
    if isinstance(value, (list, tuple)) or isinstance(value, (int, float, str)):
        values = _list(value, key, _w, unique=False)
        return sorted(set(values))
    raise ConfigError(f"{key} must be a list of w or {{start, stop, step}}, got {_describe(value)}")


def grid_values(grid: Union[list, dict]) -> list[float]:
    """The w values of a normalized ``w_grid``: start, start + step, ... up to and including stop."""
    if isinstance(grid, list):
        return list(grid)
    start, stop, step = grid["start"], grid["stop"], grid["step"]
    # the 1e-9 absorbs float error so that (2.5 - 1.0) / 0.1 = 14.999999999999998 still reaches 2.5
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    return sorted({round(start + i * step, W_DECIMALS) for i in range(count)})


def canonical_method(method: str, w: float) -> str:
    """w = 1 is the unguided conditional sample whatever the guide: cfg and dog at w = 1 *are* the ``none`` run."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    w = round(float(w), W_DECIMALS)
    if method == "none" and w != 1.0:
        raise ValueError(f"method 'none' is fine-tune only and has w = 1, got w={w}")
    return "none" if w == 1.0 else method


@dataclass(frozen=True)
class RunSpec:
    """One sample set the harness makes: dataset x method x w x sampling seed."""

    dataset: str
    method: str
    w: float
    seed: int


# ----------------------------------------------------------------------------------------------------------------
# The experiment


@dataclass
class Experiment:
    # results go to results/<name>/ (default: the file's name without .yaml)
    name: str
    # target datasets, registry names of benchmark.data (e.g. caltech101-32, cub100-32, food101)
    datasets: list
    description: str = ""
    # where datasets live; null = $DOGBENCH_DATA, else ../shared/data beside the repo, else ./data
    data_root: Optional[str] = None
    source: SourceConfig = field(default_factory=SourceConfig)
    # the image <-> latent map: sd-vae-ft-ema, sd-vae-ft-mse, identity (pixel space), or a local diffusers dir
    autoencoder: str = "sd-vae-ft-ema"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # guidance methods compared: none (fine-tune only, w = 1), cfg, dog
    methods: list = field(default_factory=lambda: list(METHODS))
    # guidance scales for cfg and dog: a list, or {start, stop, step} with stop included; rounded to 4 decimals,
    # each in [0, 20] (w = 1 is unguided and shared with `none`)
    w_grid: Union[list, dict] = field(default_factory=lambda: {"start": 1.0, "stop": 2.5, "step": 0.1})
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # sampling seeds; more than one gives a mean and spread per w
    seeds: list = field(default_factory=lambda: [0])
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # the YAML file this came from (not part of the config or its hash)
    path: Optional[Path] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for (owner, name), section in _SECTIONS.items():  # Experiment(..., finetune={"steps": 10}) works too
            if owner is Experiment and isinstance(getattr(self, name), dict):
                setattr(self, name, _build(section, getattr(self, name), name))
        self.name = _str(self.name, "name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError(f"name={self.name!r} is used as a directory name; use letters, digits, '.', '_', '-'")
        self.description = "" if self.description is None else str(self.description)
        self.data_root = _optional(_str, self.data_root, "data_root")
        self.datasets = _list(self.datasets, "datasets", _str)
        known = _known_dataset_names()
        for name in self.datasets:
            if known is not None and name not in known:
                raise ConfigError(f"unknown dataset {name!r} in datasets{_did_you_mean(name, known)} "
                                  f"(known: {', '.join(known)})")
        self.autoencoder = _str(self.autoencoder, "autoencoder")
        if self.autoencoder not in AUTOENCODERS and not resolve_path(self.autoencoder).is_dir():
            raise ConfigError(f"autoencoder={self.autoencoder!r} is unknown{_did_you_mean(self.autoencoder, AUTOENCODERS)} "
                              f"(use {', '.join(AUTOENCODERS)}, or an existing diffusers AutoencoderKL directory)")
        if self.autoencoder != "identity" and self.source.image_size % 8:
            raise ConfigError(f"source.image_size={self.source.image_size} is not a multiple of 8, which the VAE "
                              f"needs; use e.g. 256, or autoencoder=identity for pixel space")
        self.methods = _list(self.methods, "methods", _str, choices=METHODS)
        self.w_grid = _w_grid(self.w_grid)
        self.seeds = _list(self.seeds, "seeds", _int, low=0)

    # -- what to run --------------------------------------------------------------------------------------------

    def w_values(self) -> list[float]:
        """The guidance scales of cfg and dog, ascending, rounded to 4 decimals."""
        return grid_values(self.w_grid)

    def runs(self, dataset: Optional[str] = None) -> list[RunSpec]:
        """Every sample set to make, without duplicates: cfg and dog at w = 1 appear once, as ``none``."""
        specs = []
        for ds in [dataset] if dataset is not None else self.datasets:
            for method in self.methods:
                for w in [1.0] if method == "none" else self.w_values():
                    for seed in self.seeds:
                        spec = RunSpec(ds, canonical_method(method, w), w, seed)
                        if spec not in specs:
                            specs.append(spec)
        return specs

    # -- identities of stage outputs -----------------------------------------------------------------------------

    def stage_config(self, stage: str, dataset: str, method: Optional[str] = None, w: Optional[float] = None,
                     seed: Optional[int] = None) -> dict:
        """The settings that determine one stage's output, and nothing else (paths, worker counts, batch sizes of
        inference, checkpoint frequency, descriptions and the w selection rule are left out). Each stage contains
        the one before it:

        latents (dataset, image size, autoencoder) < finetune (+ source model, fine-tune settings)
        < sample (+ method, w, seed, sampling settings) < evaluate (+ metrics, reference split).
        The data's own fingerprint (``ImageDataset.fingerprint()``) is for the caller to add.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
        config: dict[str, Any] = {"dataset": dataset, "image_size": self.source.image_size, "autoencoder": self.autoencoder}
        if stage == "latents":
            return config
        finetune = dataclasses.asdict(self.finetune)
        for how in ("num_workers", "checkpoint_every"):  # how fast / how often saved, not what is learned
            finetune.pop(how)
        config.update(source=dataclasses.asdict(self.source), finetune=finetune)
        if stage == "finetune":
            return config
        if method is None or w is None or seed is None:
            raise ValueError(f"stage {stage!r} needs method, w and seed")
        w = round(float(w), W_DECIMALS)
        method = canonical_method(method, w)
        sampling = dataclasses.asdict(self.sampling)
        sampling.pop("batch_size")  # sample i depends only on (seed, i), not on how images are batched
        if method == "none":  # unguided: the guidance settings cannot change its samples
            sampling.pop("guided_channels")
            sampling.pop("guidance_interval")
        config.update(method=method, w=w, seed=int(seed), sampling=sampling)
        if stage == "sample":
            return config
        config["evaluation"] = {"metrics": list(self.evaluation.metrics), "ref_split": self.evaluation.ref_split}
        return config

    def stage_hash(self, stage: str, dataset: str, **kwargs) -> str:
        return config_hash(self.stage_config(stage, dataset, **kwargs))

    # -- locations -----------------------------------------------------------------------------------------------

    def results_dir(self, root: Optional[str | os.PathLike] = None) -> Path:
        """results/<name>/ (or <root>/<name>/; $DOGBENCH_RESULTS moves results/)."""
        return results_root(root) / self.name

    def data_dir(self) -> Path:
        return data_root(resolve_path(self.data_root) if self.data_root else None)

    def sweep_storage(self, root: Optional[str | os.PathLike] = None) -> str:
        """The Optuna storage URL: ``sweep.storage``, else a sqlite file in the results directory."""
        if self.sweep.storage:
            return self.sweep.storage
        return f"sqlite:///{(self.results_dir(root) / 'sweep.db').resolve()}"

    def sweep_num_samples(self) -> int:
        """Images per sweep trial: sweep.low_fidelity_samples, at most sampling.num_samples."""
        return min(self.sweep.low_fidelity_samples, self.sampling.num_samples)

    def sweep_w_range(self) -> tuple[float, float]:
        values = self.w_values()
        return tuple(self.sweep.w_range) if self.sweep.w_range else (min(values), max(values))

    # -- serialization -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The resolved config (defaults filled in, overrides applied): loadable again, and hashable."""
        data = dataclasses.asdict(self)
        data.pop("path")
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        return config_hash(self.to_dict())


# ----------------------------------------------------------------------------------------------------------------
# Loading


def resolve_path(path: str | os.PathLike) -> Path:
    """A config path: absolute or ~ as written, otherwise relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def find_experiment(path_or_name: str | os.PathLike) -> Path:
    """A YAML path, or a name such as ``paper`` for experiments/paper.yaml."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    for candidate in (EXPERIMENTS_DIR / f"{path_or_name}.yaml", EXPERIMENTS_DIR / str(path_or_name)):
        if candidate.is_file():
            return candidate
    names = experiment_names()
    raise ConfigError(f"no experiment file {str(path_or_name)!r}{_did_you_mean(path.stem, names)}; give a YAML path "
                      f"or one of: {', '.join(names) or '(experiments/ is empty)'}")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where} is not valid YAML ({getattr(e, 'problem', None) or e}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings (name: ..., datasets: [...]), not {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_with_bases(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"'base:' loops through {path}; remove the cycle")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = Path(base).expanduser()
    if not base_path.is_absolute() and (path.parent / base_path).is_file():
        base_path = path.parent / base_path
    parent = _read_with_bases(find_experiment(base_path if base_path.is_file() else base), seen + (path,))
    parent.pop("name", None)  # a derived file is its own experiment, named after its own file unless it says
    parent.pop("description", None)
    return _merge(parent, data)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` strings; each value is parsed as YAML (``1e-4`` -> float is handled later)."""
    data = dict(data)
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {text!r} must be KEY=VALUE, e.g. finetune.steps=100 or datasets=[cub100-32]")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {text!r}: the value is not valid YAML; quote strings, e.g. {key}='a: b'") from None
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            here = ".".join(parts[: i + 1])
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"cannot set {key!r}: {here} is {child!r}, not a mapping; set {here}=... as a whole")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def _build(cls, data: Any, key: str):
    """A section dataclass from a mapping, rejecting unknown keys (with a suggestion) and building nested sections."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping of settings, got {_describe(data)}")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "path"]
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            full = f"{key}.{name}" if key else str(name)
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
            hint = f"did you mean {(f'{key}.' if key else '') + close[0]!r}?" if close else f"valid keys here: {', '.join(names)}"
            raise ConfigError(f"unknown config key {full!r}; {hint}")
        section = _SECTIONS.get((cls, name))
        kwargs[name] = _build(section, value, f"{key}.{name}" if key else name) if section else value
    return cls(**kwargs)


_SECTIONS = {
    (Experiment, "source"): SourceConfig,
    (Experiment, "finetune"): FinetuneConfig,
    (Experiment, "sampling"): SamplingConfig,
    (Experiment, "evaluation"): EvaluationConfig,
    (Experiment, "sweep"): SweepConfig,
    (Experiment, "tracking"): TrackingConfig,
    (TrackingConfig, "wandb"): WandbConfig,
}


def experiment_from_dict(data: dict, path: Optional[Path] = None, check_storage: bool = True) -> Experiment:
    data = dict(data)
    if "datasets" not in data:
        raise ConfigError("the config has no 'datasets'; add e.g. datasets: [caltech101-32] (or datasets=[...] on the command line)")
    if data.get("name") is None:
        if path is None:
            raise ConfigError("the config has no 'name'; add name: <results directory name>")
        data["name"] = path.stem
    experiment = _build(Experiment, data, "")
    experiment.path = path
    if check_storage and experiment.sweep.storage:
        check_storage_url(experiment.sweep.storage)
    return experiment


def load_experiment(path_or_name: str | os.PathLike, overrides: Sequence[str] = (), check_storage: bool = True) -> Experiment:
    """Read, override and validate an experiment. ``path_or_name``: a YAML path, or a name in experiments/.

    ``check_storage`` connects to an explicit ``sweep.storage`` (a few seconds at most) so that an unreachable
    database fails now rather than after fine-tuning.
    """
    path = find_experiment(path_or_name)
    data = apply_overrides(_read_with_bases(path), list(overrides))
    return experiment_from_dict(data, path=path, check_storage=check_storage)


# ----------------------------------------------------------------------------------------------------------------
# Checks against the rest of the package and the outside world


def _known_dataset_names() -> Optional[list[str]]:
    """The benchmark.data registry, or None while that module does not provide one (then names are not checked)."""
    try:
        from benchmark.data import dataset_names
    except ImportError:
        return None
    return list(dataset_names())


def _known_model_names() -> Optional[list[str]]:
    try:
        from benchmark.models.dit import DiT_models
    except ImportError:
        return None
    return list(DiT_models)


def _check_model_args(args: dict, key: str) -> dict:
    try:
        import inspect

        from benchmark.models.dit import DiT
    except ImportError:
        return dict(args)
    allowed = [p for p in inspect.signature(DiT.__init__).parameters if p != "self"]
    for name in args:
        if name not in allowed:
            raise ConfigError(f"unknown DiT argument {key}.{name}{_did_you_mean(name, allowed)} (allowed: {', '.join(allowed)})")
    return dict(args)


def _mask_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find either
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def check_storage_url(url: str, timeout_s: float = 5.0) -> None:
    """Fail now, in one line, if Optuna could not use ``url``: a sqlite file must be creatable, a database server
    must accept a connection within ``timeout_s`` seconds."""
    scheme = url.split(":", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if dialect == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"sweep.storage={url!r} is not a sqlite file URL; write sqlite:///relative.db or sqlite:////abs/path.db")
        file = url[len("sqlite:///"):].split("?", 1)[0]
        if file in ("", ":memory:"):
            return
        target = Path(file)
        existing = target if target.exists() else next(p for p in [target.parent, *target.parent.parents] if p.exists() or p == Path("."))
        if target.exists() and (target.is_dir() or not os.access(target, os.W_OK)):
            raise ConfigError(f"sweep.storage file {target} is not a writable file; fix its permissions or pick another path")
        if not target.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
            raise ConfigError(f"sweep.storage: cannot create {target} ({existing} is not a writable directory); pick a writable path")
        return
    if dialect == "postgres":
        raise ConfigError("sweep.storage scheme 'postgres://' is not understood by SQLAlchemy; write postgresql://...")
    if dialect not in ("postgresql", "mysql", "mariadb"):
        raise ConfigError(f"sweep.storage={_mask_url(url)!r}: unsupported scheme {scheme!r}; use sqlite:///FILE, "
                          f"postgresql://USER@HOST/DB or mysql://USER@HOST/DB (or null for a local sqlite file)")
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigError("sweep.storage needs SQLAlchemy (installed with optuna); pip install sqlalchemy") from None
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": max(1, int(timeout_s))})
    except ModuleNotFoundError as e:
        package = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}.get(e.name, e.name)
        raise ConfigError(f"sweep.storage {dialect} URL needs the database driver {e.name!r}: pip install {package}, "
                          f"or name an installed driver in the URL ({dialect}+DRIVER://...)") from None
    except Exception as e:
        raise ConfigError(f"sweep.storage={_mask_url(url)!r} is not a valid URL ({str(e).splitlines()[0]})") from None
    try:
        with engine.connect():
            pass
    except Exception as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise ConfigError(f"cannot connect to sweep.storage {_mask_url(url)} ({reason[0] if reason else type(e).__name__}); "
                          f"start the database, fix the URL, or set sweep.storage=null for a local sqlite file") from None
    finally:
        engine.dispose()
