"""A scored sample set as the leaderboard reads it: every metric column of the set, on all its samples or on a
bootstrap resample of their indices, from the sample features and reference statistics its evaluation cached.

    references = References(cache_dir)                            # reference statistics, each loaded once
    scored = ScoredSet.from_result(result, features_dir, references)  # result: what evaluate_samples returned
    scored(["fd_effnet", "prdc_effnet"], index)                   # {"fd_effnet": ..., "precision_effnet": ...}

The metric's kind (``benchmark.metrics.registry``) is dispatched here, once: ``RESAMPLERS`` maps each kind to the
factory of its resampler, ``factory(metric, scored_set)`` -> a callable (bootstrap index array, or None for all
samples -> {column: value}); a factory reads what it needs from the set (its features and reference in the metric's
space, the evaluation result it came from). A new kind of metric plugs in there. Whatever resamplers of one reference
share (the square root of its covariance, the real k-NN radii) is computed once per reference, in
``Reference.shared``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

from benchmark.metrics.evaluate import load_sample_features
from benchmark.metrics.intervals import FrechetResampler, PRDCResampler, reference_root
from benchmark.metrics.reference import ReferenceStats, load_reference
from benchmark.metrics.registry import METRICS, PRDC_KEYS, Metric

Index = Optional[np.ndarray]
Resampler = Callable[[Index], Mapping[str, float]]


class Reference:
    """Reference statistics, and what every resampler against them shares (filled by the first that computes it)."""

    def __init__(self, stats: ReferenceStats):
        self.stats = stats
        self.shared: dict = {}


def _frechet(metric: Metric, scored: "ScoredSet") -> Resampler:
    features, reference = scored.features(metric.space), scored.reference(metric.space)
    ref = reference.stats
    if "root" not in reference.shared:
        reference.shared["root"] = reference_root(ref.sigma)
    resampler = FrechetResampler(features, ref.mu, ref.sigma, ref_root=reference.shared["root"])
    return lambda index: {metric.columns[0]: resampler(index)}


def _prdc(metric: Metric, scored: "ScoredSet") -> Resampler:
    reference = scored.reference(metric.space)
    # the real k-NN radii depend on the reference alone: computed once per reference
    resampler = PRDCResampler(reference.stats.prdc_features, scored.features(metric.space),
                              real_radii=reference.shared.get("real_radii"))
    reference.shared["real_radii"] = resampler.real_radii

    def values(index: Index) -> dict[str, float]:
        result = resampler(index)
        return dict(zip(metric.columns, (result[k] for k in PRDC_KEYS)))
    return values


# metric kind -> factory(metric, scored set) -> resampler
RESAMPLERS: dict[str, Callable[[Metric, "ScoredSet"], Resampler]] = {"fd": _frechet, "prdc": _prdc}


class References:
    """Reference-statistics files of one cache folder, by name, each loaded once."""

    def __init__(self, directory: Union[str, Path]):
        self.directory = Path(directory)
        self._loaded: dict[str, Reference] = {}

    def __getitem__(self, name: str) -> Reference:
        if name not in self._loaded:
            self._loaded[name] = Reference(load_reference(self.directory / name))
        return self._loaded[name]


class ScoredSet:
    """The metric columns of one sample set for all samples or a resample of them (``__call__``). ``features``:
    feature space -> the (n, D) sample features, or a function loading them (called once, when first needed);
    ``references``: feature space -> its Reference."""

    def __init__(self, features: Mapping[str, Union[np.ndarray, Callable[[], np.ndarray]]],
                 references: Mapping[str, Reference], result: Optional[Mapping] = None):
        self._features, self._references = dict(features), dict(references)
        self.result = dict(result or {})  # the evaluation result the set was built from (more inputs of a kind)
        self._resamplers: dict[str, Resampler] = {}

    @classmethod
    def from_result(cls, result: Mapping, features_dir: Union[str, Path], references: References) -> "ScoredSet":
        """From what ``evaluate_samples`` returned for the set (its ``features`` files in ``features_dir``, its
        ``reference`` files by name in ``references``)."""
        folder = Path(features_dir)
        features = {space: (lambda name=name: load_sample_features(folder / name))
                    for space, name in result["features"].items()}
        return cls(features, {space: references[name] for space, name in result["reference"].items()}, result)

    def features(self, space: str) -> np.ndarray:
        if callable(self._features[space]):
            self._features[space] = self._features[space]()
        return self._features[space]

    def reference(self, space: str) -> Reference:
        return self._references[space]

    def resampler(self, metric: str) -> Resampler:
        if metric not in self._resamplers:
            m = METRICS[metric]
            self._resamplers[metric] = RESAMPLERS[m.kind](m, self)
        return self._resamplers[metric]

    def __call__(self, metrics: Sequence[str], index: Index = None) -> dict[str, float]:
        """Every column of ``metrics`` on the samples ``index`` picks (None: all of them)."""
        out: dict[str, float] = {}
        for metric in metrics:
            out.update(self.resampler(metric)(index))
        return out
