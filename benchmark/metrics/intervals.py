"""Bootstrap intervals for the sample-quality numbers of the leaderboard (Frechet distances and PRDC).

What an interval covers
    Every metric here is a statistic of a finite set of generated samples; the reference side (mu_r, Sigma_r for a
    Frechet distance, the real features and their k-NN radii for PRDC) is held fixed. A Frechet distance computed from
    n samples is biased upwards (its mean term alone by tr(Sigma)/n), and methods are compared at the same n, so that
    bias is part of the quantity reported: an interval targets E[metric of n samples], the expectation AT THIS SAMPLE
    SIZE, not the infinite-sample limit.

The bias-centred percentile interval
    With the estimate t on all samples and bootstrap replicates t*_1..t*_B with mean m* and quantiles q_lo, q_hi
    (e.g. 2.5% and 97.5% for level 0.95), the interval is

        [t + (q_lo - m*),  t + (q_hi - m*)].

    A resample drawn with replacement holds only about 63% distinct samples, so its Frechet distance carries the
    finite-sample bias a second time and the replicates sit above t; the plain percentile interval [q_lo, q_hi] would
    then miss t itself. Shifting the replicates by t - m* keeps their spread (the sampling variability) and centres them
    on the observed value, which is an unbiased estimate of the target above. (The reflected "basic" interval
    [2t - q_hi, 2t - q_lo] moves the other way and under-covers for the same reason.) Bounds are not clipped to a
    metric's range (an FD near zero can get a negative lower bound, a precision near one an upper bound above one).

Resampling groups and pairing
    ``bootstrap`` resamples groups: each group is a set of sample indices 0..size-1 redrawn with replacement, and
    groups are drawn independently of each other (one group per sampling seed: different seeds share no noise).
    Methods sampled with the same seed get the same noise and labels for sample i, so their sample sets are PAIRED
    by index: paired sets belong to one group, and the statistic applies that group's indices to each of them. The
    difference between two methods then varies only with what differs between the methods, not with the draw of
    noise and labels both share.

Fast Frechet distance of a resample
    With R = Sigma_r^(1/2), tr((S Sigma_r)^(1/2)) = sum sqrt(eig(R S R)), and R S R is the covariance of the projected
    rows Y = X R. The projection is done once; a resample with multiplicities w_j over its u distinct rows has
    R S* R = Z^T Z / (m - 1), Z_j = sqrt(w_j) (y_j - ybar*), whose nonzero eigenvalues are those of the u x u Gram
    matrix Z Z^T. Whichever of u and D is smaller sets the eigenproblem; for n <= D the full Gram matrix Y Y^T is
    computed once and a resample only indexes it.

PRDC of a resample
    k-NN radii of the real and fake sets are computed once on the full sets and held fixed, as are the memberships
    (which fake lies in which real ball, which real in which fake ball, stored as index pairs); a resample only counts
    memberships of the fakes it drew. With no resampling this is exactly ``benchmark.metrics.prdc.prdc``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from benchmark.metrics.frechet import _psd_sqrt  # the one PSD square root of the package
# the same distance code and tensors as prdc(), so memberships (hence point estimates) are bit-identical to prdc()
from benchmark.metrics.prdc import NEAREST_K, _as_tensor, ball_blocks, knn_radii
from benchmark.metrics.registry import PRDC_KEYS

LEVEL = 0.95
RESAMPLES = 200

Indices = Sequence[np.ndarray] | None  # one index array per group, or None for the full sets


@dataclass(frozen=True)
class Interval:
    """A point estimate on all samples and its bootstrap interval [low, high] at confidence ``level``."""
    value: float
    low: float
    high: float
    level: float = LEVEL
    resamples: int = 0

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check_bootstrap_args(sizes, resamples, level) -> list[int]:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a whole number >= 1 (got {resamples!r}); use e.g. {RESAMPLES}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1 (got {level!r}); use e.g. {LEVEL}")
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise ValueError("bootstrap needs at least one group of samples (got none); pass one size per sampling seed")
    if min(sizes) < 1:
        raise ValueError(f"every group needs at least one sample (sizes {sizes}); drop the empty sample sets")
    return sizes


def bootstrap_many(statistic: Callable[[Indices], Mapping[str, float]], sizes: Sequence[int],
                   resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Interval]:
    """Intervals for several statistics computed from the same resamples.

    ``statistic(None)`` gives the point estimates on the full sets; ``statistic(indices)`` gets one index array per
    group (``sizes[g]`` indices drawn with replacement from range(sizes[g]), groups drawn independently) and returns
    the same keys. Paired sets belong to one group: the statistic applies that group's indices to each of them.
    Deterministic given ``seed``."""
    sizes = _check_bootstrap_args(sizes, resamples, level)
    point = {key: float(value) for key, value in statistic(None).items()}
    rng = np.random.default_rng(seed)
    replicates = np.empty((resamples, len(point)))
    for b in range(resamples):
        values = statistic([rng.integers(0, size, size=size) for size in sizes])
        replicates[b] = [values[key] for key in point]
    alpha = (1.0 - level) / 2.0
    intervals = {}
    for j, (key, value) in enumerate(point.items()):
        column = replicates[:, j]
        if not (np.isfinite(value) and np.isfinite(column).all()):
            raise ValueError(f"statistic {key!r} is not finite on some resample; check the inputs (e.g. a zero "
                             f"denominator)")
        # the replicates' spread, centred on the observed value (see the module docstring)
        q_lo, q_hi = np.quantile(column, [alpha, 1.0 - alpha]) - column.mean()
        intervals[key] = Interval(value, float(value + q_lo), float(value + q_hi), level, resamples)
    return intervals


def bootstrap(statistic: Callable[[Indices], float], sizes: Sequence[int], resamples: int = RESAMPLES,
              seed: int = 0, level: float = LEVEL) -> Interval:
    """The interval of one statistic; see ``bootstrap_many`` for the meaning of groups and indices."""
    return bootstrap_many(lambda indices: {"value": statistic(indices)}, sizes, resamples, seed, level)["value"]


def _counts(indices, n: int) -> np.ndarray:
    """How often each of the n samples occurs in a resample (all ones for the full set)."""
    if indices is None:
        return np.ones(n, dtype=np.int64)
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or len(indices) < 2:
        raise ValueError(f"a resample must be a 1-D integer index array of length >= 2, got {indices.dtype} "
                         f"{indices.shape}")
    counts = np.bincount(indices, minlength=n) if indices.min() >= 0 else None
    if counts is None or len(counts) > n:
        raise ValueError(f"resample indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
    return counts


def reference_root(ref_sigma) -> np.ndarray:
    """Sigma_r^(1/2) (PSD square root), to share between FrechetResamplers of one reference."""
    sigma = np.asarray(ref_sigma, dtype=np.float64)
    return _psd_sqrt((sigma + sigma.T) / 2)


class FrechetResampler:
    """Frechet distance of a feature set (n, D), or of a resample of its rows, to fixed reference statistics.

    ``resampler(indices)`` equals frechet_distance(*gaussian_stats(features[indices]), ref_mu, ref_sigma) up to
    rounding; ``resampler()`` is the distance of the full set. ``ref_root`` (from ``reference_root``) saves the
    D x D square root when several sets share one reference; it must be the root of ``ref_sigma``."""

    def __init__(self, features, ref_mu, ref_sigma, *, ref_root: np.ndarray | None = None):
        x = np.asarray(features, dtype=np.float64)
        mu_r = np.asarray(ref_mu, dtype=np.float64)
        sigma_r = np.asarray(ref_sigma, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need a (n>=2, D) feature matrix, got shape {x.shape}")
        dim = x.shape[1]
        if mu_r.shape != (dim,) or sigma_r.shape != (dim, dim):
            raise ValueError(f"reference statistics must be ({dim},) and ({dim}, {dim}) for {dim}-d features, got "
                             f"{mu_r.shape} and {sigma_r.shape}")
        root = reference_root(sigma_r) if ref_root is None else np.asarray(ref_root, dtype=np.float64)
        self.n, self.dim = x.shape
        mean = x.mean(axis=0)
        # Rows centred on the full-set mean: a resample's mean is then near zero and the centring below cancels little.
        self._centred = x - mean
        self._mean_gap = mean - mu_r
        self._square_norms = np.einsum("ij,ij->i", self._centred, self._centred)
        self._ref_trace = float(np.trace(sigma_r))
        self._projected = self._centred @ root
        self._gram = self._projected @ self._projected.T if self.n <= self.dim else None

    def __call__(self, indices: np.ndarray | None = None) -> float:
        counts = _counts(indices, self.n)
        m = int(counts.sum())
        weights = counts.astype(np.float64)
        mean_shift = weights @ self._centred / m  # resample mean minus full-set mean
        gap = self._mean_gap + mean_shift
        trace = (weights @ self._square_norms - m * (mean_shift @ mean_shift)) / (m - 1)
        distinct = np.flatnonzero(counts)
        w = weights[distinct]
        if len(distinct) <= self.dim:  # u x u Gram matrix of Z
            if self._gram is not None:
                gram = self._gram[np.ix_(distinct, distinct)]
            else:
                rows = self._projected[distinct]
                gram = rows @ rows.T
            along_mean = gram @ w / m  # y_j . ybar*
            centred = gram - along_mean[:, None] - along_mean[None, :] + (w @ along_mean) / m
            root_w = np.sqrt(w)
            inner = root_w[:, None] * centred * root_w[None, :]
        else:  # D x D covariance of Z
            rows = self._projected[distinct]
            z = (rows - w @ rows / m) * np.sqrt(w)[:, None]
            inner = z.T @ z
        eig = np.linalg.eigvalsh(inner) / (m - 1)
        value = gap @ gap + trace + self._ref_trace - 2.0 * np.sqrt(np.maximum(eig, 0.0)).sum()
        return float(max(value, 0.0))  # as frechet_distance: rounding must not make a distance negative


class PRDCResampler:
    """Precision, recall, density and coverage of a fake set against a real set, for the full fake set or a resample
    of its rows, with every k-NN radius computed once on the full sets and held fixed.

    ``resampler()`` equals prdc(real, fake, k, device, block) exactly. ``real_radii`` (the ``real_radii`` attribute of
    an earlier resampler on the same real set, k and block) saves recomputing them. Memory grows with the number of
    memberships (about k per point for similar sets; at most n_real * n_fake)."""

    def __init__(self, real, fake, k: int = NEAREST_K, *, device: str | torch.device = "cpu", block: int = 2048,
                 real_radii: torch.Tensor | None = None):
        real_t, fake_t = _as_tensor(real, device), _as_tensor(fake, device)
        if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
            raise ValueError(f"PRDC needs two (N, D) feature sets of equal D, got {tuple(real_t.shape)} and "
                             f"{tuple(fake_t.shape)}")
        self.k, self.n, self.n_real = k, len(fake_t), len(real_t)
        if real_radii is not None and real_radii.shape != (self.n_real,):
            raise ValueError(f"real_radii must hold one radius per real point ({self.n_real}), got "
                             f"{tuple(real_radii.shape)}; pass the real_radii of a resampler on the same real set")
        self.real_radii = knn_radii(real_t, k, block) if real_radii is None else real_radii.to(real_t.device)
        fake_radii = knn_radii(fake_t, k, block)
        in_real_ball, in_fake_ball = [], []  # (real, fake) index pairs, from prdc()'s own blocks
        for i, inside_real, inside_fake in ball_blocks(real_t, fake_t, self.real_radii, fake_radii, block):
            for pairs, inside in ((in_real_ball, inside_real), (in_fake_ball, inside_fake)):
                reals, fakes = inside.nonzero(as_tuple=True)
                pairs.append(np.stack([reals.cpu().numpy() + i, fakes.cpu().numpy()]).astype(np.int32))
        self._real_ball_pairs = np.concatenate(in_real_ball, axis=1)  # fake [1] lies in the ball of real [0]
        self._fake_ball_pairs = np.concatenate(in_fake_ball, axis=1)  # real [0] lies in the ball of fake [1]
        self._balls_per_fake = np.bincount(self._real_ball_pairs[1], minlength=self.n).astype(np.float64)
        self._in_some_real_ball = self._balls_per_fake > 0

    def _reals_reached(self, pairs: np.ndarray, drawn: np.ndarray) -> float:
        reached = np.zeros(self.n_real, dtype=bool)
        reached[pairs[0][drawn[pairs[1]]]] = True
        return float(reached.mean())

    def __call__(self, indices: np.ndarray | None = None) -> dict[str, float]:
        counts = _counts(indices, self.n)
        m = int(counts.sum())
        drawn = counts > 0
        return {
            "precision": float(counts @ self._in_some_real_ball / m),
            "recall": self._reals_reached(self._fake_ball_pairs, drawn),
            "density": float(counts @ self._balls_per_fake / m / self.k),
            "coverage": self._reals_reached(self._real_ball_pairs, drawn),
        }


def _per_seed(name: str, sets) -> list:
    if isinstance(sets, np.ndarray) and sets.ndim == 2:
        raise ValueError(f"{name} must be a list with one (n, D) feature array per seed, e.g. [features]")
    sets = list(sets)
    if not sets:
        raise ValueError(f"{name} is empty; pass one (n, D) feature array per sampling seed")
    return sets


def _check_paired(name_a: str, sets_a: list, name_b: str, sets_b: list) -> None:
    if len(sets_a) != len(sets_b):
        raise ValueError(f"paired comparison needs one set per seed for both methods, got {len(sets_a)} in {name_a} "
                         f"and {len(sets_b)} in {name_b}; pass the same seeds, in the same order")
    for s, (a, b) in enumerate(zip(sets_a, sets_b)):
        if len(a) != len(b):
            raise ValueError(f"seed #{s}: paired sets need equal sample counts, got {len(a)} in {name_a} and "
                             f"{len(b)} in {name_b}; pass the same samples (same seed and count) for both methods")


def _seed_mean(resamplers: Sequence, indices: Indices):
    """The mean over seeds of each resampler's statistic (a float, or a dict of floats)."""
    values = [r(idx) for r, idx in zip(resamplers, [None] * len(resamplers) if indices is None else indices)]
    if isinstance(values[0], dict):
        return {key: float(np.mean([v[key] for v in values])) for key in values[0]}
    return float(np.mean(values))


def fd_interval(features_per_seed: Sequence[np.ndarray], ref_mu, ref_sigma, resamples: int = RESAMPLES,
                seed: int = 0, level: float = LEVEL) -> Interval:
    """The mean over seeds of the Frechet distance to (ref_mu, ref_sigma), each seed's samples resampled
    independently (seeds may hold different sample counts)."""
    sets = _per_seed("features_per_seed", features_per_seed)
    root = reference_root(ref_sigma)
    resamplers = [FrechetResampler(f, ref_mu, ref_sigma, ref_root=root) for f in sets]
    return bootstrap(lambda indices: _seed_mean(resamplers, indices), [r.n for r in resamplers], resamples, seed,
                     level)


def paired_fd_difference(features_a_per_seed: Sequence[np.ndarray], features_b_per_seed: Sequence[np.ndarray],
                         ref_mu, ref_sigma, resamples: int = RESAMPLES, seed: int = 0,
                         level: float = LEVEL) -> dict[str, Interval]:
    """Method A against baseline B, sampled with the same seeds (sample i of seed s paired across methods).

    Returns intervals of "difference" = mean_s FD(A_s) - mean_s FD(B_s) (negative: A is closer to the reference),
    "relative_pct" = (FD_B - FD_A) / FD_B * 100 of the seed means (A's improvement over B), and "a", "b" = the
    seed-mean FDs themselves, all from the same resamples (indices drawn jointly within each seed pair)."""
    sets_a = _per_seed("features_a_per_seed", features_a_per_seed)
    sets_b = _per_seed("features_b_per_seed", features_b_per_seed)
    _check_paired("features_a_per_seed", sets_a, "features_b_per_seed", sets_b)
    root = reference_root(ref_sigma)
    method_a = [FrechetResampler(f, ref_mu, ref_sigma, ref_root=root) for f in sets_a]
    method_b = [FrechetResampler(f, ref_mu, ref_sigma, ref_root=root) for f in sets_b]

    def compare(indices):
        fd_a, fd_b = _seed_mean(method_a, indices), _seed_mean(method_b, indices)
        relative = (fd_b - fd_a) / fd_b * 100.0 if fd_b > 0 else float("nan")
        return {"difference": fd_a - fd_b, "relative_pct": relative, "a": fd_a, "b": fd_b}

    return bootstrap_many(compare, [r.n for r in method_a], resamples, seed, level)


def prdc_interval(real, fake_per_seed: Sequence[np.ndarray], k: int = NEAREST_K, resamples: int = RESAMPLES,
                  seed: int = 0, level: float = LEVEL, *, device: str | torch.device = "cpu",
                  block: int = 2048) -> dict[str, Interval]:
    """Intervals of the mean over seeds of precision, recall, density and coverage of each seed's fakes against the
    fixed ``real`` set (fakes resampled independently per seed; seeds may hold different sample counts)."""
    sets = _per_seed("fake_per_seed", fake_per_seed)
    first = PRDCResampler(real, sets[0], k, device=device, block=block)
    resamplers = [first] + [PRDCResampler(real, f, k, device=device, block=block, real_radii=first.real_radii)
                            for f in sets[1:]]
    return bootstrap_many(lambda indices: _seed_mean(resamplers, indices), [r.n for r in resamplers], resamples,
                          seed, level)


def paired_prdc_difference(real, fake_a_per_seed: Sequence[np.ndarray], fake_b_per_seed: Sequence[np.ndarray],
                           k: int = NEAREST_K, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL, *,
                           device: str | torch.device = "cpu", block: int = 2048) -> dict[str, Interval]:
    """Intervals of mean_s metric(A_s) - mean_s metric(B_s) for each PRDC metric (positive: A scores higher), the
    fakes of A and B resampled jointly within each seed (sample i of seed s paired across methods)."""
    sets_a = _per_seed("fake_a_per_seed", fake_a_per_seed)
    sets_b = _per_seed("fake_b_per_seed", fake_b_per_seed)
    _check_paired("fake_a_per_seed", sets_a, "fake_b_per_seed", sets_b)
    first = PRDCResampler(real, sets_a[0], k, device=device, block=block)
    method_a = [first] + [PRDCResampler(real, f, k, device=device, block=block, real_radii=first.real_radii)
                          for f in sets_a[1:]]
    method_b = [PRDCResampler(real, f, k, device=device, block=block, real_radii=first.real_radii) for f in sets_b]

    def compare(indices):
        a, b = _seed_mean(method_a, indices), _seed_mean(method_b, indices)
        return {key: a[key] - b[key] for key in PRDC_KEYS}

    return bootstrap_many(compare, [r.n for r in method_a], resamples, seed, level)
