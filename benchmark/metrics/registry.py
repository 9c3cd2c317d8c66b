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
    bounds: tuple | None = None  # the values it can take (a rate: [0, 1]); its intervals are clipped to them


@dataclass(frozen=True)
class Metric:
    name: str
    space: str           # feature network: inception, dinov2, effnet
    kind: str            # "fd" (Frechet distance), "prdc" (precision / recall / density / coverage, k = 5), or one
                         # of the kinds of the metric card (KINDS below: kid, class_kid, vendi, copy, cmmd)
    columns: tuple[str, ...]
    description: str


def _fd(name: str, space: str, description: str) -> Metric:
    return Metric(name, space, "fd", (name,), description)


def _prdc(name: str, space: str, suffix: str, description: str) -> Metric:
    return Metric(name, space, "prdc", tuple(f"{k}{suffix}" for k in PRDC_KEYS), description)


# The metric card (issue 21): one column each, named <kind>_<space> (cmmd has one space, CLIP). What each needs:
#   kid, cmmd: the sample features and the reference's real features;  vendi: the sample features alone;
#   copy: the features of the fine-tuning split and of a held-out split;  class_kid: sample labels and labelled reals.
# (lower is better, digits in tables) per kind; the modules that compute them are named in their descriptions.
KINDS = {"fd": (True, 2), "prdc": (False, 3), "kid": (True, 5), "class_kid": (True, 5), "vendi": (False, 2),
         "copy": (True, 3), "cmmd": (True, 3)}
SPACE_TITLES = {"inception": "Inception-V3 pool", "dinov2": "DINOv2 ViT-L/14 CLS", "effnet": "EfficientNet-Lite0"}


def _card(kind: str, space: str, description: str) -> Metric:
    name = f"{kind}_{space}"
    return Metric(name, space, kind, (name,), f"{description} in {SPACE_TITLES[space]} features")


CARD = tuple(_card(kind, space, description) for kind, description in (
    ("kid", "KID: unbiased polynomial-kernel MMD^2 (Binkowski et al. 2018; benchmark.metrics.kernels)"),
    ("class_kid", "KID per class averaged over the sampled classes, worst classes in the metrics JSON "
                  "(benchmark.metrics.kernels)"),
    ("vendi", "Vendi score: exp of the entropy of the cosine-similarity eigenvalues (Friedman & Dieng 2023; "
              "benchmark.metrics.diversity)"),
    ("copy", "copy rate: samples nearer a fine-tuning image than the closest 5% of held-out real images are "
             "(benchmark.metrics.memorization)"),
) for space in SPACE_TITLES) + (
    Metric("cmmd", "clip", "cmmd", ("cmmd",), "CMMD: RBF-kernel MMD^2 x 1000 of CLIP ViT-L/14-336 image embeddings "
                                                "(Jayasumana et al. 2024; optional: benchmark.metrics.clip)"),
)

BOUNDS = {"copy": (0.0, 1.0)}  # kind -> the range of its values (a fraction of samples)
# kinds with no meaning on the real-data control (real target images scored like a sample set): its images are the
# fine-tuning images themselves (ref_split all) or the held-out images the copy threshold is calibrated on (ref_split
# train), so its copy rate would be ~1 or ~0.05 by construction, not a finding
NOT_ON_REAL_IMAGES = ("copy",)

METRICS = {m.name: m for m in (
    _fd("fid", "inception", "FID: Frechet distance in Inception-V3 pool features (pytorch-fid weights)"),
    _fd("fd_dinov2", "dinov2", "Frechet distance in DINOv2 ViT-L/14 CLS features"),
    _prdc("prdc", "dinov2", "", "precision / recall / density / coverage (k = 5) in DINOv2 ViT-L/14 features"),
    _fd("fd_effnet", "effnet", "Frechet distance in EfficientNet-Lite0 features (offline stand-in, NOT FID)"),
    _prdc("prdc_effnet", "effnet", "_effnet", "precision / recall / density / coverage (k = 5) in EfficientNet-Lite0"),
    *CARD,
)}

COLUMNS = {}
for _metric in METRICS.values():
    for _name in _metric.columns:
        COLUMNS[_name] = Column(_name, lower_is_better=KINDS[_metric.kind][0], digits=KINDS[_metric.kind][1],
                                frechet=_metric.kind == "fd", bounds=BOUNDS.get(_metric.kind))
COLUMN_ORDER = ("fid", "fd_dinov2", "precision", "recall", "density", "coverage", "fd_effnet",  # runs.csv order
                "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet",
                *(m.name for m in CARD))
assert set(COLUMN_ORDER) == set(COLUMNS)
FRECHET_COLUMNS = tuple(c for c in COLUMN_ORDER if COLUMNS[c].frechet)


def columns_of(metrics) -> list[str]:
    """The runs.csv columns the given metric names fill, in order."""
    return [c for m in metrics for c in METRICS[m].columns]


def lower_is_better(column: str) -> bool:
    return COLUMNS[column].lower_is_better


def metric_of_column(column: str) -> Metric:
    return next(m for m in METRICS.values() if column in m.columns)
