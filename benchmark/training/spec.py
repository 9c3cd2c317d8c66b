"""What a training run reads, trains and writes, as small values the entry points take (``finetune``, ``pretrain``,
``train`` in run.py) beside the settings objects (TrainSettings, LaunchSettings, SourceSettings)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from benchmark.data import DatasetSpec
from benchmark.models import DiT
from benchmark.tracking import WandbRun, WandbSettings

PathLike = Union[str, Path]


@dataclass(frozen=True)
class TrainingSet:
    """The images trained on: a registered dataset name or a user's own dataset's spec, the root it is found under
    (None: the default lookup), the latent cache root (None: beside the results) and, for smoke runs, at most
    ``max_images`` images evenly spread over the set."""

    dataset: Union[str, DatasetSpec]
    root: Optional[PathLike] = None
    cache_dir: Optional[PathLike] = None
    max_images: Optional[int] = None

    @classmethod
    def of(cls, data: Union["TrainingSet", str, DatasetSpec]) -> "TrainingSet":
        return data if isinstance(data, TrainingSet) else cls(data)


@dataclass(frozen=True)
class RunOutput:
    """Where a run goes: its directory (resumable; ``run.json`` says what it holds), a copy of the EMA export
    (``export``), the W&B settings and where the W&B run is filed (default: ``<out_dir>/wandb``), progress bars."""

    out_dir: Path
    export: Optional[PathLike] = None
    wandb: WandbSettings = field(default_factory=WandbSettings)
    wandb_run: Optional[WandbRun] = None
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @classmethod
    def of(cls, out: Union["RunOutput", PathLike]) -> "RunOutput":
        return out if isinstance(out, RunOutput) else cls(Path(out))


@dataclass
class NetworkToTrain:
    """The DiT a run trains (its label table already has the dataset's classes) and what its exports record:
    ``kind`` (finetune | pretrain), the autoencoder whose space it works in, the image side in pixels, and
    ``metadata`` (e.g. the source checkpoint and its sha256; every ``*sha256`` entry is part of the run's identity)."""

    model: DiT
    kind: str
    autoencoder: str
    resolution: int
    metadata: dict = field(default_factory=dict)
