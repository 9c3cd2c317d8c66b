"""The experiment: one schema composed of the sections each layer owns.

    source:     benchmark.models.settings.SourceSettings        (the pre-trained model, DoG's guide)
    finetune:   benchmark.training.settings.TrainSettings        (the fine-tuning recipe)
    sampling:   benchmark.sampling.settings.SamplingSettings     (how samples are made)
    evaluation: benchmark.metrics.settings.EvaluationSettings    (+ select_by, the harness's selection rule)
    sweep:      SweepSettings                                    (dogbench sweep's Optuna search)
    tracking:   benchmark.tracking.WandbSettings under ``wandb``

plus the experiment's own keys below. Every field has a default; the defaults are the paper's protocol (Zhong et
al., ICLR 2025). Only ``datasets`` must be given. Relative paths (``source.checkpoint``, ``autoencoder`` as a
folder, ``data_root``) are relative to the experiment file.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from benchmark.data import DatasetSpec, dataset_names, get_dataset
from benchmark.data.settings import OwnDataset
from benchmark.errors import did_you_mean
from benchmark.guidance import W_DECIMALS, GuidanceScale, MethodSpec
from benchmark.harness.finetunes import check_variants
from benchmark.harness.methods import (Design, MethodEntry, MethodList, RunSpec, check_entries, entries, grid_points,
                                       run_spec)
from benchmark.io import data_root, results_root
from benchmark.metrics.memorization import check_held_out
from benchmark.metrics.registry import columns_of
from benchmark.metrics.settings import EvaluationSettings
from benchmark.models import DEFAULT_VAE
from benchmark.models.settings import AUTOENCODER_NAMES, Autoencoder, SourceSettings
from benchmark.sampling.settings import SamplingSettings
from benchmark.settings import ADDED, HOW, Count, Index, Real, Settings, identity, non_empty
from benchmark.tracking import WandbSettings
from benchmark.training.settings import StrategySettings, TrainSettings

METHODS = ("none", "cfg", "dog")  # the default comparison


def _as_list(value: Any) -> Any:
    """``datasets=cub100-32`` on the command line means a list of one."""
    return value if value is None or isinstance(value, (list, tuple, dict, Settings)) else [value]


def _dataset_name(entry: str | OwnDataset) -> str:
    return entry if isinstance(entry, str) else entry.name


class Evaluation(EvaluationSettings):
    select_by: str = Field("fid", json_schema_extra=identity(HOW))  # picks a set; no set's scores depend on it
    """the runs.csv column that picks each method's best w on the selection seeds; one the metrics produce"""

    @model_validator(mode="after")
    def _select_by_is_produced(self):
        columns = columns_of(self.metrics)
        if self.select_by not in columns:
            raise ValueError(f"select_by={self.select_by!r} is not produced by metrics={self.metrics}"
                             f"{did_you_mean(self.select_by, columns)}; choose one of {', '.join(columns)}")
        return self


class SweepSettings(Settings):
    """The Optuna search over w (``dogbench sweep``): cheap low-fidelity trials, then the full evaluation."""

    sampler: Literal["tpe", "random", "grid", "qmc"] = "tpe"
    """Optuna sampler (grid walks w_grid)"""
    trials: Count = 20
    """trials per (dataset, method)"""
    low_fidelity_samples: Count = 1000
    """images per trial before the full evaluation (capped at sampling.num_samples)"""
    storage: Optional[str] = None
    """Optuna storage URL (sqlite:///FILE, postgresql://..., mysql://...); null = results/<name>/sweep.db"""
    w_range: Optional[list[GuidanceScale]] = None
    """[low, high] searched; null = the span of w_grid"""
    seed: Index = 0
    """sampler seed"""
    heartbeat_s: Count = 60
    """seconds between a running trial's heartbeats; a trial silent for twice this (its worker died) is failed and
    its w retried"""

    @field_validator("w_range")
    @classmethod
    def _range(cls, value):
        if value is not None and (len(value) != 2 or value[0] >= value[1]):
            raise ValueError(f"must be [low, high] with low < high, e.g. [1.0, 3.0], got {value}")
        return value


class Selection(Settings):
    """Where each method's best w is chosen: sample sets of their own seeds, never reported."""

    seeds: Annotated[list[Index], non_empty("selection.seeds=[0]")] = [0]
    """sampling seeds whose samples choose each method's best w (mean over these seeds)"""
    num_samples: Optional[Count] = Field(None, json_schema_extra={"null_word": "same"})
    """images per selection sample set (default: sampling.num_samples)"""


class Report(Settings):
    """What the leaderboard reports: the selected (and fixed) settings sampled afresh on their own seeds."""

    seeds: Annotated[list[Index], non_empty("report.seeds=[1]")] = [1]
    """sampling seeds of the reported numbers; disjoint from selection.seeds, so no noise is shared"""
    fixed_w: list[GuidanceScale] = []
    """protocol w values reported as rows of their own beside the best-w rows (the paper reports w = 1.5)"""
    bootstrap: Count = 200
    """bootstrap resamples behind every interval (sample indices resampled; reference statistics held fixed)"""
    level: Real = Field(0.95, gt=0.5, lt=1)
    """confidence level of the intervals"""
    controls: bool = True
    """add the real-data row (real target images scored like samples) and the seed-noise row"""

    @field_validator("seeds")
    @classmethod
    def _once(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a seed twice: {value}")
        return value

    @field_validator("fixed_w")
    @classmethod
    def _sorted(cls, value: list) -> list:
        return sorted(set(value))


class Weights(Settings):
    """Feature-network weights named in the experiment (absolute, or relative to the experiment file). The DiT
    checkpoint is source.checkpoint and the VAE is autoencoder; null = the default lookup (README, 'weights')."""

    inception: Optional[str] = None
    """FID Inception file pt_inception-2015-12-05-6726825d.pth (default: the torch hub checkpoints folder)"""
    dinov2_hub_dir: Optional[str] = None
    """a local clone of facebookresearch/dinov2 (default: the torch hub cache)"""
    dinov2_weights: Optional[str] = None
    """dinov2_vitl14_pretrain.pth (default: the torch hub checkpoints folder)"""


class Launch(StrategySettings):
    """How the fine-tune uses the processes it runs in. One process trains on one device; to train on N GPUs run
    the experiment under torchrun (README, multi-GPU): every process then joins."""

    @model_validator(mode="after")
    def _joins(self):
        if self.strategy == "ddp_spawn":
            raise ValueError("launch.strategy=ddp_spawn starts processes of its own; an experiment's fine-tune joins "
                             "the processes it runs in: use ddp and run the experiment under torchrun")
        return self


class Tracking(Settings):
    wandb: WandbSettings = WandbSettings()


class WRange(Settings):
    """start, start + step, ... up to and including stop."""

    start: GuidanceScale
    stop: GuidanceScale
    step: Real = Field(gt=0, le=20)

    @model_validator(mode="after")
    def _ordered(self):
        if self.stop < self.start:
            raise ValueError(f"stop={self.stop} is below start={self.start}; swap them")
        if round(self.step, W_DECIMALS) == 0:
            raise ValueError(f"step={self.step} rounds to 0 at {W_DECIMALS} decimals; use a step >= 0.0001")
        return self

    def values(self) -> list[float]:
        # the 1e-9 absorbs float error so that (2.5 - 1.0) / 0.1 = 14.999999999999998 still reaches 2.5
        count = int(math.floor((self.stop - self.start) / self.step + 1e-9)) + 1
        return sorted({round(self.start + i * self.step, W_DECIMALS) for i in range(count)})


# A grid of w: a list, or {start, stop, step}. The discriminator validates only the form the user wrote, so an error
# names the problem in that form (the tags contain brackets, which error messages leave out of the key).
WGrid = Annotated[Union[Annotated[list[GuidanceScale], non_empty("w_grid=[1.0, 1.5, 2.0]"), Tag("[list]")],
                        Annotated[WRange, Tag("{range}")]],
                  Discriminator(lambda v: "{range}" if isinstance(v, (dict, WRange)) else "[list]")]


# A dataset: a registry name, or your own as {name, path, layout}; validated in the form the user wrote (see WGrid)
DatasetEntry = Annotated[Union[Annotated[str, Tag("[name]")], Annotated[OwnDataset, Tag("{own}")]],
                         Discriminator(lambda v: "{own}" if isinstance(v, (dict, OwnDataset)) else "[name]")]


class Experiment(Settings):
    """Everything a benchmark run does; ``load_experiment`` reads it from YAML."""

    name: str
    """results go to results/<name>/ (default: the file's name without .yaml)"""
    datasets: Annotated[list[DatasetEntry], non_empty("datasets=[caltech101-32]")]
    """target datasets: registry names of benchmark.data (e.g. caltech101-32, cub100-32, food101), or your own as
    {name, path, layout: folder} (benchmark/data/settings.py)"""
    description: str = ""
    data_root: Optional[str] = None
    """where registered datasets live (relative: to the experiment file); null = $DOGBENCH_DATA, else ./data, else
    ../shared/data of the working directory"""
    source: SourceSettings = SourceSettings()
    autoencoder: Autoencoder = DEFAULT_VAE
    finetune: TrainSettings = TrainSettings()
    finetunes: Optional[dict[str, Any]] = Field(None, json_schema_extra={"null_word": "none", **identity(ADDED)})
    """named fine-tune variants, each a partial finetune, e.g. {full: {}, lora-r4: {adapter: {kind: lora, rank: 4}}}
    (benchmark/harness/finetunes.py); null = the one finetune"""
    methods: Annotated[MethodList, non_empty("methods=[none, cfg, dog]")] = list(METHODS)
    """guidance methods compared: registry names (none, cfg, dog, cfg+dog, autoguidance), module:attribute, or
    {name, label, params, grid, guides} entries (benchmark/harness/methods.py)"""
    design: Optional[Design] = Field(None, json_schema_extra={"null_word": "none", **identity(ADDED)})
    """a factorised design, e.g. {negative: [cfg, dog, icg], rule: [linear, apg], schedule: [constant, interval]}:
    one method entry per cell, labelled dog+apg@interval, appended to methods (benchmark/harness/design.py)"""
    w_grid: WGrid = WRange(start=1.0, stop=2.5, step=0.1)
    """guidance scales of cfg and dog: a list, or {start, stop, step} with stop included; each in [0, 20]"""
    sampling: SamplingSettings = SamplingSettings()
    evaluation: Evaluation = Evaluation()
    selection: Selection = Selection()
    report: Report = Report()
    sweep: SweepSettings = SweepSettings()
    tracking: Tracking = Tracking()
    weights: Weights = Weights()
    launch: Launch = Launch()

    _path: Optional[Path] = PrivateAttr(default=None)  # the YAML file (not part of the config or its hash)
    _fingerprints: dict = PrivateAttr(default_factory=dict)  # data_fingerprint's memory

    @model_validator(mode="before")
    @classmethod
    def _no_old_seeds(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seeds" in data:
            raise ValueError("the top-level 'seeds' is now two lists that share no seed: selection.seeds (the "
                             "samples that choose w) and report.seeds (the samples that are scored); move it there")
        return data

    @field_validator("datasets", "methods", "w_grid", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("name")
    @classmethod
    def _directory_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r} is used as a directory name; use letters, digits, '.', '_', '-'")
        return value

    @field_validator("datasets")
    @classmethod
    def _unique(cls, value: list) -> list:
        names = [_dataset_name(v) for v in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once; remove the duplicates")
        return value

    @field_validator("datasets")
    @classmethod
    def _registered(cls, value: list) -> list:
        known = dataset_names()
        for name in (v for v in value if isinstance(v, str)):
            if name not in known:
                raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, known)} (known: {', '.join(known)}; "
                                 f"or your own: {{name: {name}, path: FOLDER, layout: folder}})")
        return value

    @field_validator("w_grid")
    @classmethod
    def _sorted_grid(cls, value):
        return sorted(set(value)) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _autoencoder(self):
        if self.autoencoder not in AUTOENCODER_NAMES and not Path(self.autoencoder).expanduser().is_absolute() \
                and not re.search(r"[/\\]", self.autoencoder):
            raise ValueError(f"autoencoder={self.autoencoder!r} is unknown{did_you_mean(self.autoencoder, AUTOENCODER_NAMES)}"
                             f" (use {', '.join(AUTOENCODER_NAMES)}, or a diffusers AutoencoderKL folder)")
        if self.source.image_size is None:
            raise ValueError("source.image_size is null; an experiment needs the image side in pixels, e.g. "
                             "source.image_size=256")
        if self.autoencoder != "identity" and self.source.image_size % 8:
            raise ValueError(f"source.image_size={self.source.image_size} is not a multiple of 8, which the VAE "
                             f"needs; use e.g. 256, or autoencoder=identity for pixel space")
        check_entries(self.method_entries(), self.finetune.steps)
        for entry in self.method_entries():
            grid_points(entry, self.w_values(), self.sampling.guidance_interval)  # every point validated now
        check_held_out(self.evaluation.metrics, self.finetune.split)
        shared = sorted(set(self.selection.seeds) & set(self.report.seeds))
        if shared:
            raise ValueError(f"report.seeds and selection.seeds share seed(s) {shared}: the reported numbers would "
                             f"reuse the noise w was chosen on; give report.seeds other seeds")
        check_variants(self)
        return self

    # -- paths ------------------------------------------------------------------------------------------------------

    @property
    def path(self) -> Optional[Path]:
        return self._path

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path written in the experiment: absolute or ~ as written, otherwise relative to the experiment file
        (to the working directory for an experiment built in code)."""
        path = Path(path).expanduser()
        if path.is_absolute():
            return path
        return (self._path.parent if self._path else Path.cwd()) / path

    def source_checkpoint(self) -> str:
        """``source.checkpoint`` as a path when it names a file, else as written (a release name to look up)."""
        path = self.resolve(self.source.checkpoint)
        return str(path) if path.exists() else self.source.checkpoint

    def autoencoder_spec(self) -> str:
        """``autoencoder`` with a folder resolved against the experiment file; names stay names."""
        if self.autoencoder in AUTOENCODER_NAMES:
            return self.autoencoder
        return str(self.resolve(self.autoencoder))

    def weight_paths(self) -> dict:
        """The weights section as evaluate_samples' keyword arguments, paths resolved against the experiment file."""
        w = self.weights
        return {"inception_weights": w.inception and str(self.resolve(w.inception)),
                "dinov2_hub_dir": w.dinov2_hub_dir and str(self.resolve(w.dinov2_hub_dir)),
                "dinov2_weights": w.dinov2_weights and str(self.resolve(w.dinov2_weights))}

    def dataset_names(self) -> list[str]:
        """The names of ``datasets``, in order: what tables, plots and folders call them."""
        return [_dataset_name(d) for d in self.datasets]

    def dataset(self, name: str) -> str | DatasetSpec:
        """What ``get_dataset`` reads for ``name``: a registry name, or the spec of your own dataset (its folder
        resolved against the experiment file)."""
        entry = next(d for d in self.datasets if _dataset_name(d) == name)
        return entry if isinstance(entry, str) else entry.spec(self.resolve(entry.path))

    def data_fingerprint(self, name: str) -> str:
        """The fingerprint of every image of dataset ``name`` (listed once per process)."""
        if name not in self._fingerprints:
            self._fingerprints[name] = get_dataset(self.dataset(name), split="all", root=self.data_dir()).fingerprint()
        return self._fingerprints[name]

    def data_dir(self) -> Path:
        return data_root(self.resolve(self.data_root) if self.data_root else None)

    def results_dir(self, root: Optional[str | os.PathLike] = None) -> Path:
        """results/<name>/ (or <root>/<name>/; $DOGBENCH_RESULTS moves results/)."""
        return results_root(root) / self.name

    # -- what to run ------------------------------------------------------------------------------------------------

    def w_values(self) -> list[float]:
        """The guidance scales of cfg and dog, ascending, rounded to 4 decimals."""
        return list(self.w_grid) if isinstance(self.w_grid, list) else self.w_grid.values()

    def method_entries(self) -> list[MethodEntry]:
        return entries(list(self.methods) + (self.design.entries() if self.design else []))

    def entry(self, label: str) -> MethodEntry:
        return next(e for e in self.method_entries() if e.key == label)

    def grid(self, label: str) -> list[MethodSpec]:
        """The specs a method is selected from."""
        return grid_points(self.entry(label), self.w_values(), self.sampling.guidance_interval)

    def method_spec(self, label: str, values: dict) -> MethodSpec:
        """Method ``label`` at ``values`` (a fixed w, a sweep trial), folded like its grid points."""
        return self.entry(label).spec(values, self.sampling.guidance_interval)

    def unguided_methods(self) -> set[str]:
        """The methods whose grid holds the unguided point: they share the ``none`` sample set there."""
        return {e.key for e in self.method_entries() if any(not s.guided for s in self.grid(e.key))}

    def selection_runs(self, dataset: Optional[str] = None) -> list[RunSpec]:
        """The sample sets that choose each method's parameters: every grid point on the selection seeds, without
        duplicates (an unguided point of any method is the one ``none`` set)."""
        specs = []
        for ds in [dataset] if dataset is not None else self.dataset_names():
            for entry in self.method_entries():
                for point in self.grid(entry.key):
                    for seed in self.selection.seeds:
                        spec = run_spec(ds, entry.key, point, seed)
                        if spec not in specs:
                            specs.append(spec)
        return specs

    def selection_num_samples(self) -> int:
        return self.selection.num_samples or self.sampling.num_samples

    # -- sweeps -----------------------------------------------------------------------------------------------------

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

    # -- serialization ----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Without a null ``finetunes`` or ``design``: an experiment without them keeps the config it had."""
        return {k: v for k, v in super().to_dict().items() if k not in ("finetunes", "design") or v is not None}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
