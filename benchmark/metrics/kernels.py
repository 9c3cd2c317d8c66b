"""Kernel two-sample distances of a sample set to real images, from cached features: KID, KID per class, CMMD.

KID (Binkowski et al. 2018, "Demystifying MMD GANs")
    The squared maximum mean discrepancy with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, estimated
    without bias: with n samples x and m reals y,

        KID = mean_{i != j} k(x_i, x_j) + mean_{a != b} k(y_a, y_b) - 2 mean_{i, a} k(x_i, y_a).

    Unlike a Frechet distance its expectation does not depend on n, so small sets of different sizes compare, and
    two samples of one distribution score 0 on average (an estimate can be slightly negative). The published code and
    ``torchmetrics`` average it over random subsets of equal size (100 x 1000) to get a mean and a standard
    deviation; here it is computed once on every sample and every real (the minimum-variance choice), and its
    interval is the benchmark's bootstrap over samples with the reals held fixed, like every other number.

    Why not ``torchmetrics.image.kid``: its ``maximum_mean_discrepancy`` assumes equal set sizes (it divides the cross
    term by m^2 with m the fake count), draws its subsets from the global RNG, and takes images or features through
    a module on every call; the benchmark has a few hundred samples against thousands of cached real features, and
    needs the estimate of a resample with fixed reals (it is the independent reference in the tests, at equal sizes).

The estimate assumes the samples are drawn independently of the reals. A sample that IS a real image (the real-data
control scores images of the reference itself; a generator may reproduce a training image the reference holds) would
be paired with itself in the cross term, and k(x, x) (for the cubic kernel far above any k(x, y)) would pull the
estimate below zero by O(1/n): KID of a set against itself would be -(2/n)(mean k(x, x) - mean_{i != j} k(x_i, x_j)).
So, as the within-set terms skip i = j, the cross term skips the pairs of a sample and a real that coincide (closer
than COINCIDENT times the reals' RMS norm: the same image, up to feature rounding). KID of a set against itself is
then exactly 0; for independent sets nothing changes. (Copies are the copy rate's business, not KID's.)

Memory: above PAIR_BLOCK (1000) samples the mean of k over pairs of different samples is taken over the pairs inside
consecutive blocks of 1000 samples (the subset size of the reference implementation) instead of all pairs: an
unbiased estimate of the same mean, with n x 1000 kernel values held per set instead of n^2 (a leaderboard holds every
set's resampler at once: 80 MB for 10k samples instead of 800 MB). CMMD's self-pairs keep their exact weight, and the
cross and real-real terms always use every pair; at or below 1000 samples every number is the full formula.

A resample (bootstrap indices with counts c_j per distinct sample) keeps the estimator's meaning: the within-set
term averages over pairs of *different* samples, sum_{j != l} c_j c_l k(x_j, x_l) / (m^2 - sum_j c_j^2), so a
duplicated draw is never paired with itself (k(x, x) would bias the replicate upwards); with every c_j = 1 this is
the unbiased estimate above.

Class KID
    For each class with at least two distinct samples (and two real images): KID between that class's samples and
    that class's real images; the score is the unweighted mean over those classes (a method that is good on a few
    classes and collapses others scores worse than its pooled KID says). Classes are fixed by the labels, which the
    methods of one seed share, so paired differences stay paired; a resample drops a class it draws fewer than two
    distinct samples of. ``worst`` lists the classes with the highest KID.

CMMD (Jayasumana et al. 2024, "Rethinking FID")
    1000 x MMD^2 of L2-normalised CLIP image embeddings with the Gaussian RBF kernel exp(-|x - y|^2 / (2 sigma^2)),
    sigma = 10, in the paper's minimum-variance form (every pair, the diagonal included):

        CMMD = 1000 (mean_{i, j} k(x_i, x_j) + mean_{a, b} k(y_a, y_b) - 2 mean_{i, a} k(x_i, y_a)).
"""
from __future__ import annotations

import numpy as np

from benchmark.metrics.intervals import _counts

KID_DEGREE = 3
KID_COEF = 1.0
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
PAIR_BLOCK = 1000  # samples per block of the within-sample term (the reference code's subset size)
COINCIDENT = 1e-4  # a sample this close to a real (relative to the reals' RMS norm) is that real image
BLOCK = 1024  # rows of the real set per kernel block (a 1024 x 10000 float64 block is 82 MB)


def _rows(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"{what} must be an (n, D) feature array, got shape {x.shape}")
    return x


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = KID_DEGREE, coef: float = KID_COEF) -> np.ndarray:
    """(x.y / D + coef)^degree for every pair of rows (D = the feature dimension)."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def rbf_kernel(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA) -> np.ndarray:
    """exp(-|x - y|^2 / (2 sigma^2)) for every pair of rows."""
    square = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.exp(-np.maximum(square, 0.0) / (2.0 * sigma ** 2))


def _cross_sums(kernel, x: np.ndarray, y: np.ndarray, skip_coincident: bool) -> tuple[np.ndarray, np.ndarray]:
    """(row sums of kernel(x, y), how many reals each row was summed over), in blocks of y; with
    ``skip_coincident`` the reals that coincide with the row's sample are left out (module docstring)."""
    sums, counts = np.zeros(len(x)), np.full(len(x), float(len(y)))
    tolerance = (COINCIDENT ** 2) * float((y * y).sum(1).mean())
    x_square = (x * x).sum(1)
    for a in range(0, len(y), BLOCK):
        block = y[a:a + BLOCK]
        values = kernel(x, block)
        if skip_coincident:
            square = x_square[:, None] + (block * block).sum(1)[None, :] - 2.0 * (x @ block.T)
            same = square <= tolerance
            values[same] = 0.0
            counts -= same.sum(1)
        sums += values.sum(1)
    return sums, counts


def real_kernel_mean(kernel, real: np.ndarray, unbiased: bool) -> float:
    """The real-real term: the mean of kernel(y_a, y_b) over pairs a != b (``unbiased``) or over every pair."""
    total, diagonal = 0.0, 0.0
    for a in range(0, len(real), BLOCK):
        block = kernel(real[a:a + BLOCK], real)
        total += block.sum()
        diagonal += np.trace(block[:, a:a + BLOCK])
    m = len(real)
    if unbiased:
        if m < 2:
            raise ValueError(f"KID needs at least 2 real feature vectors, got {m}")
        return float((total - diagonal) / (m * (m - 1)))
    return float(total / (m * m))


class _KernelResampler:
    """Shared by KID and CMMD: the sample-sample kernel matrix and each sample's mean kernel value against the
    reals are computed once; a resample only weights them."""

    unbiased = True
    scale = 1.0

    def __init__(self, fake, real, *, real_term: float | None = None):
        x, y = _rows(fake, "the sample features"), _rows(real, "the real features")
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"sample and real features differ in dimension: {x.shape[1]} and {y.shape[1]}")
        self.n = len(x)
        # the sample-sample kernel within consecutive blocks of PAIR_BLOCK samples (all of it up to that size)
        self._blocks = [(a, self.kernel(x[a:a + PAIR_BLOCK], x[a:a + PAIR_BLOCK]))
                        for a in range(0, self.n, PAIR_BLOCK)]
        # per sample: the kernel summed over the reals (those it is not), and over how many
        self._cross_sum, self._cross_count = _cross_sums(self.kernel, x, y, skip_coincident=self.unbiased)
        if (self._cross_count == 0).any():
            raise ValueError("a sample coincides with every real feature vector: nothing to compare it with")
        self.real_term = real_kernel_mean(self.kernel, y, self.unbiased) if real_term is None else float(real_term)

    def kernel(self, x, y):
        raise NotImplementedError

    def of_counts(self, counts: np.ndarray) -> float:
        """The statistic of the multiset that holds sample j ``counts[j]`` times."""
        c = counts.astype(np.float64)
        m = c.sum()
        off, pairs, diagonal = 0.0, 0.0, 0.0  # over pairs of different samples in one block; the self-pairs
        for a, block in self._blocks:
            cb = c[a:a + len(block)]
            self_pairs = (cb * cb) @ np.diag(block)
            off += cb @ block @ cb - self_pairs
            pairs += cb.sum() ** 2 - cb @ cb
            diagonal += self_pairs
        mean_off = off / pairs if pairs > 0 else float("nan")
        if self.unbiased:  # pairs of different samples only (module docstring)
            within = mean_off
        else:  # every pair: the different-sample pairs at their mean, and each sample with itself
            within = ((mean_off * (m * m - c @ c)) if pairs > 0 else 0.0) + diagonal
            within /= m * m
        if not np.isfinite(within):
            return float("nan")
        cross = (c @ self._cross_sum) / (c @ self._cross_count)
        return float(self.scale * (within + self.real_term - 2.0 * cross))

    def __call__(self, indices: np.ndarray | None = None) -> float:
        return self.of_counts(_counts(indices, self.n))


class KIDResampler(_KernelResampler):
    """KID of a sample feature set (n, D) against real features (m, D), or of a resample of the samples with the
    reals held fixed; ``resampler()`` is the estimate on every sample. ``real_term`` (the ``real_term`` of another
    resampler on the same reals) saves the m x m kernel."""

    def kernel(self, x, y):
        return polynomial_kernel(x, y)


class CMMDResampler(_KernelResampler):
    """CMMD of L2-normalised CLIP embeddings (n, D) against real ones (m, D); see the module docstring."""

    unbiased = False
    scale = CMMD_SCALE

    def kernel(self, x, y):
        return rbf_kernel(x, y)


class ClassKIDResampler:
    """The mean over classes of the KID between each class's samples and its real images (module docstring).

    ``labels`` (n,) are the samples' classes; ``real_labels`` (m,) the reals'. ``real_terms`` ({class: term}, the
    ``real_terms`` of another resampler on the same reals) saves the per-class real kernels."""

    MIN_DISTINCT = 2

    def __init__(self, fake, labels, real, real_labels, *, real_terms: dict | None = None):
        x, y = _rows(fake, "the sample features"), _rows(real, "the real features")
        labels, real_labels = np.asarray(labels).astype(np.int64), np.asarray(real_labels).astype(np.int64)
        if labels.shape != (len(x),) or real_labels.shape != (len(y),):
            raise ValueError(f"need one label per feature row: {labels.shape} labels for {len(x)} samples, "
                             f"{real_labels.shape} for {len(y)} reals")
        if (labels < 0).any():
            raise ValueError("class KID needs every sample's class label (some are unknown, -1)")
        self.n, self.labels = len(x), labels
        sample_counts = np.bincount(labels, minlength=1)
        real_counts = np.bincount(real_labels, minlength=len(sample_counts))
        self.classes = [int(c) for c in np.flatnonzero(sample_counts >= self.MIN_DISTINCT)
                        if c < len(real_counts) and real_counts[c] >= 2]
        if not self.classes:
            raise ValueError(f"class KID needs a class with at least {self.MIN_DISTINCT} samples and 2 real images; "
                             f"the {self.n} samples have {int((sample_counts > 0).sum())} classes, none of them so")
        real_terms = real_terms or {}
        self._members = {c: np.flatnonzero(labels == c) for c in self.classes}
        self._kid = {c: KIDResampler(x[self._members[c]], y[real_labels == c], real_term=real_terms.get(c))
                     for c in self.classes}
        self.real_terms = {c: r.real_term for c, r in self._kid.items()}
        self.skipped = int((sample_counts > 0).sum()) - len(self.classes)  # sampled classes too small to score

    def per_class(self, indices: np.ndarray | None = None) -> dict[int, float]:
        """{class: KID of its samples (resampled by ``indices``)} for the classes the (re)sample has >= 2 distinct
        samples of."""
        counts = _counts(indices, self.n)
        out = {}
        for c in self.classes:
            mine = counts[self._members[c]]
            if (mine > 0).sum() >= self.MIN_DISTINCT:
                out[c] = self._kid[c].of_counts(mine)
        return out

    def __call__(self, indices: np.ndarray | None = None) -> float:
        values = self.per_class(indices)
        return float(np.mean(list(values.values()))) if values else float("nan")

    def worst(self, count: int = 5) -> list[dict]:
        """The ``count`` classes with the highest KID on the full set: [{class, kid, samples}], worst first."""
        values = self.per_class()
        order = sorted(values, key=values.get, reverse=True)[:count]
        return [{"class": c, "kid": values[c], "samples": len(self._members[c])} for c in order]
