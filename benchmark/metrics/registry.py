"""The one description of every metric: its name in ``evaluation.metrics``, its feature space, the runs.csv columns
it fills, which direction is better, and how many digits a table shows. Config validation, evaluation, the
leaderboard, the sweep and the plots all read it."""
from __future__ import annotations

from dataclasses import dataclass

PRDC_KEYS = ("precision", "recall", "density", "coverage")


@dataclass(frozen=True)
class Column:
    name: str
    lower_is_better: bool
    digits: int
    frechet: bool  # a Frechet distance: the paper's relative improvement applies to it


@dataclass(frozen=True)
class Metric:
    name: str
    space: str           # feature network: inception, dinov2, effnet
    kind: str            # "fd" (Frechet distance) or "prdc" (precision / recall / density / coverage, k = 5)
    columns: tuple[str, ...]
    description: str


def _fd(name: str, space: str, description: str) -> Metric:
    return Metric(name, space, "fd", (name,), description)


def _prdc(name: str, space: str, suffix: str, description: str) -> Metric:
    return Metric(name, space, "prdc", tuple(f"{k}{suffix}" for k in PRDC_KEYS), description)


METRICS = {m.name: m for m in (
    _fd("fid", "inception", "FID: Frechet distance in Inception-V3 pool features (pytorch-fid weights)"),
    _fd("fd_dinov2", "dinov2", "Frechet distance in DINOv2 ViT-L/14 CLS features"),
    _prdc("prdc", "dinov2", "", "precision / recall / density / coverage (k = 5) in DINOv2 ViT-L/14 features"),
    _fd("fd_effnet", "effnet", "Frechet distance in EfficientNet-Lite0 features (offline stand-in, NOT FID)"),
    _prdc("prdc_effnet", "effnet", "_effnet", "precision / recall / density / coverage (k = 5) in EfficientNet-Lite0"),
)}

COLUMNS = {}
for _metric in METRICS.values():
    for _name in _metric.columns:
        COLUMNS[_name] = Column(_name, lower_is_better=_metric.kind == "fd", digits=2 if _metric.kind == "fd" else 3,
                                frechet=_metric.kind == "fd")
COLUMN_ORDER = ("fid", "fd_dinov2", "precision", "recall", "density", "coverage", "fd_effnet",  # runs.csv order
                "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet")
assert set(COLUMN_ORDER) == set(COLUMNS)
FRECHET_COLUMNS = tuple(c for c in COLUMN_ORDER if COLUMNS[c].frechet)


def columns_of(metrics) -> list[str]:
    """The runs.csv columns the given metric names fill, in order."""
    return [c for m in metrics for c in METRICS[m].columns]


def lower_is_better(column: str) -> bool:
    return COLUMNS[column].lower_is_better


def metric_of_column(column: str) -> Metric:
    return next(m for m in METRICS.values() if column in m.columns)
