"""The metric card of a sample set: every metric it lists, as one resampler, dispatched on the metric's kind in
this one place (``METRICS[name].kind``, benchmark.metrics.registry).

    card = SampleSetCard(metrics, features={space: (n, D)}, inputs={space: SpaceInputs}, labels=...)
    card()          -> {runs.csv column: value}        the point estimates (what evaluate_samples records)
    card(indices)   -> the same for a resample         (indices: one array of sample indices, as in intervals.py)

The resamplers behind it are those of benchmark.metrics.intervals (FrechetResampler, PRDCResampler), .kernels
(KID, class KID, CMMD), .diversity (Vendi) and .memorization (copy rate); each holds its real side fixed and takes a
bootstrap index array or None. Within a dataset and seed the leaderboard resamples every method's card with the same
indices (paired differences), exactly as it does the Frechet distances.

``SpaceInputs`` is what one feature space compares samples with; its derived quantities (the reference's square
root, the real k-NN radii, kernel means over the reals, the copy threshold) are computed once and shared by every
sample set against the same inputs. ``CardFiles`` builds cards from the files an evaluation result names (sample
features beside the samples; reference statistics and split features in the reference cache), for the leaderboard.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from benchmark.metrics.diversity import VendiResampler
from benchmark.metrics.intervals import (LEVEL, RESAMPLES, FrechetResampler, Interval, PRDCResampler, bootstrap_many,
                                         reference_root)
from benchmark.metrics.kernels import ClassKIDResampler, CMMDResampler, KIDResampler
from benchmark.metrics.memorization import COPY_QUANTILE, CopyResampler, copy_threshold, nearest
from benchmark.metrics.prdc import MAX_POINTS, subsample
from benchmark.metrics.reference import ReferenceStats, load_arrays, load_reference
from benchmark.metrics.registry import METRICS, PRDC_KEYS
from benchmark.metrics.splits import SplitFeatures, load_split_features

NEEDS = {  # kind -> the SpaceInputs fields it reads (beyond the sample features)
    "fd": ("reference",), "prdc": ("reference",), "kid": ("reference",), "cmmd": ("reference",), "vendi": (),
    "copy": ("train", "held_out"), "class_kid": ("classes",),
}


@dataclass
class SpaceInputs:
    """The real side of one feature space's metrics, held fixed in every resample."""

    reference: ReferenceStats | None = None   # fd, prdc, kid, cmmd: the reference statistics and real features
    train: SplitFeatures | None = None        # copy: the fine-tuning images
    held_out: SplitFeatures | None = None     # copy: real images of the target the model was not fine-tuned on
    classes: SplitFeatures | None = None      # class_kid: labelled real images of the reference split
    device: str = "cpu"
    _memo: dict = field(default_factory=dict, repr=False)

    def _once(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def need(self, metric: str) -> None:
        missing = [name for name in NEEDS[METRICS[metric].kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{metric} needs the {' and '.join(missing)} features of its space")

    def root(self) -> np.ndarray:
        return self._once("root", lambda: reference_root(self.reference.sigma))

    def copy_tau(self) -> float:
        """The copy threshold: the COPY_QUANTILE of the held-out images' distances to their nearest train image."""
        return self._once("tau", lambda: copy_threshold(
            nearest(self.held_out.features, self.train.features, 1, device=self.device)[0][:, 0]))

    def remember(self, key, value):
        """Keep a quantity a resampler derived from the fixed inputs (e.g. the real k-NN radii) for the next set."""
        self._memo.setdefault(key, value)
        return self._memo[key]

    def memo(self, key):
        return self._memo.get(key)


def resampler(metric: str, features: np.ndarray, inputs: SpaceInputs, labels: np.ndarray | None = None
              ) -> Callable[[np.ndarray | None], dict[str, float]]:
    """The resampler of ``metric`` on one sample set's features: callable(indices | None) -> {column: value}."""
    kind, columns = METRICS[metric].kind, METRICS[metric].columns
    inputs.need(metric)
    ref = inputs.reference
    if kind == "fd":
        one = FrechetResampler(features, ref.mu, ref.sigma, ref_root=inputs.root())
    elif kind == "prdc":
        r = PRDCResampler(ref.prdc_features, subsample(features, MAX_POINTS), device=inputs.device,
                          real_radii=inputs.memo("radii"))
        inputs.remember("radii", r.real_radii)  # the real radii depend on the reference alone
        return lambda indices: dict(zip(columns, (r(indices)[k] for k in PRDC_KEYS)))
    elif kind == "kid":
        one = KIDResampler(features, ref.prdc_features, real_term=inputs.memo("kid"))
        inputs.remember("kid", one.real_term)
    elif kind == "cmmd":
        one = CMMDResampler(features, ref.prdc_features, real_term=inputs.memo("cmmd"))
        inputs.remember("cmmd", one.real_term)
    elif kind == "vendi":
        one = VendiResampler(features)
    elif kind == "copy":
        one = CopyResampler(features, inputs.train.features, inputs.copy_tau(), device=inputs.device)
    elif kind == "class_kid":
        if labels is None:
            raise ValueError(f"{metric} needs the class label of every sample")
        one = ClassKIDResampler(features, labels, inputs.classes.features, inputs.classes.labels,
                                real_terms=inputs.memo("class_kid"))
        inputs.remember("class_kid", one.real_terms)
    else:
        raise ValueError(f"metric {metric!r} has kind {kind!r}, which the card does not know")
    column = columns[0]
    wrapped = lambda indices: {column: one(indices)}  # noqa: E731
    wrapped.statistic = one
    return wrapped


class SampleSetCard:
    """Every metric of one sample set; ``card(indices)`` -> {column: value} (see the module docstring). The
    resamplers are built on first use of a metric, so a card costs only what it is asked for."""

    def __init__(self, metrics: Sequence[str], features: Mapping[str, np.ndarray],
                 inputs: Mapping[str, SpaceInputs], labels: np.ndarray | None = None):
        self.metrics = list(metrics)
        self.features, self.inputs, self.labels = dict(features), dict(inputs), labels
        sizes = {len(f) for f in self.features.values()}
        if len(sizes) != 1:
            raise ValueError(f"the feature sets of one sample set differ in size: {sorted(sizes)}")
        self.n = sizes.pop()
        if labels is not None and len(labels) != self.n:
            raise ValueError(f"{len(labels)} labels for {self.n} samples")
        self._resamplers: dict[str, Callable] = {}

    def resampler(self, metric: str) -> Callable:
        if metric not in self._resamplers:
            space = METRICS[metric].space
            if space not in self.features:
                raise ValueError(f"{metric} needs the sample features of the {space} space")
            self._resamplers[metric] = resampler(metric, self.features[space], self.inputs[space], self.labels)
        return self._resamplers[metric]

    def __call__(self, indices: np.ndarray | None = None, metrics: Sequence[str] | None = None) -> dict[str, float]:
        """The columns of ``metrics`` (default: every metric of the card) on the samples ``indices`` picks."""
        out: dict[str, float] = {}
        for metric in self.metrics if metrics is None else metrics:
            out.update(self.resampler(metric)(indices))
        return out

    def details(self, metric: str, class_names: Sequence[str] | None = None) -> dict:
        """What a metric's number rests on, for the protocol record: the copy threshold, the worst classes."""
        kind, statistic = METRICS[metric].kind, getattr(self.resampler(metric), "statistic", None)
        if kind == "copy":
            inputs = self.inputs[METRICS[metric].space]
            return {"quantile": COPY_QUANTILE, "threshold": statistic.tau, "n_train": len(inputs.train),
                    "n_held_out": len(inputs.held_out), "train": _describe(inputs.train),
                    "held_out": _describe(inputs.held_out)}
        if kind == "class_kid":
            worst = statistic.worst()
            for entry in worst:
                if class_names is not None and entry["class"] < len(class_names):
                    entry["name"] = class_names[entry["class"]]
            return {"classes_scored": len(statistic.classes), "classes_too_small": statistic.skipped,
                    "min_samples_per_class": statistic.MIN_DISTINCT, "worst": worst}
        return {}

    def intervals(self, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict[str, Interval]:
        """Each column's bootstrap interval (the benchmark's bias-centred percentile interval, intervals.py)."""
        return bootstrap_many(lambda groups: self(None if groups is None else groups[0]), [self.n], resamples, seed,
                              level)


def protocol_lines(metrics: Sequence[str], train_split: str = "train") -> list[str]:
    """PROTOCOL.md's lines for the card metrics among ``metrics``: what each is, and for the copy rate which split is
    "train" (fine-tuned on) and which is "held out" (benchmark.metrics.memorization.SPLITS_TEXT)."""
    from benchmark.metrics.memorization import SPLITS_TEXT, held_out_split
    lines = [f"{m}: {METRICS[m].description}" for m in metrics if METRICS[m].kind not in ("fd", "prdc")]
    if any(METRICS[m].kind == "copy" for m in metrics):
        lines.append(f"{SPLITS_TEXT}; this run: train = the {train_split} split, held out = the "
                     f"{held_out_split(train_split) or '(none: fine-tuned on every image)'} split")
    return lines


def _describe(split: SplitFeatures) -> dict:
    protocol = split.protocol.get("parts", [split.protocol])
    return {"dataset": protocol[0].get("dataset"), "split": "+".join(str(p.get("split")) for p in protocol),
            "n": len(split)}


class CardFiles:
    """Cards from the files an evaluation result names (``evaluate_samples``' result: "features" beside the
    samples; "reference", "train", "held_out", "classes" in ``cache_dir``), each file loaded once."""

    def __init__(self, cache_dir, device: str = "cpu"):
        self.cache_dir, self.device = Path(cache_dir), device
        self._inputs: dict[tuple, SpaceInputs] = {}
        self._files: dict[Path, object] = {}

    def _load(self, path: Path, loader):
        if path not in self._files:
            self._files[path] = loader(path)
        return self._files[path]

    def inputs(self, result: Mapping, space: str) -> SpaceInputs:
        names = tuple(_names(result.get(part, {}).get(space)) for part in ("reference", "train", "held_out",
                                                                            "classes"))
        if names not in self._inputs:
            reference, train, held_out, classes = names
            split = lambda files: SplitFeatures.join(  # noqa: E731
                [self._load(self.cache_dir / f, load_split_features) for f in files]) if files else None
            self._inputs[names] = SpaceInputs(
                reference=self._load(self.cache_dir / reference[0], load_reference) if reference else None,
                train=split(train), held_out=split(held_out), classes=split(classes), device=self.device)
        return self._inputs[names]

    def card(self, result: Mapping, folder, metrics: Sequence[str] | None = None) -> SampleSetCard:
        """The card of the sample set whose evaluation ``result`` was written in ``folder``."""
        metrics = list(metrics if metrics is not None else result["protocol"])
        spaces = list(dict.fromkeys(METRICS[m].space for m in metrics))
        features, labels = {}, None
        for space in spaces:
            arrays = self._load(Path(folder) / result["features"][space], lambda p: load_arrays(p, "sample features"))
            features[space] = arrays["features"]
            labels = arrays.get("labels", labels)
        return SampleSetCard(metrics, features, {s: self.inputs(result, s) for s in spaces}, labels)


def _names(value) -> tuple[str, ...]:
    return () if not value else (value,) if isinstance(value, str) else tuple(value)
