"""The Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning"):
the effective number of distinct samples in a set, from cached features.

With K the n x n similarity matrix of the samples (K_ii = 1) and lambda_1..n the eigenvalues of K / n (they sum to
1), the score is the exponential of their Shannon entropy:

    VS = exp(-sum_i lambda_i log lambda_i)        (0 log 0 = 0)

n identical samples score 1, n mutually orthogonal ones score n. The similarity is the cosine similarity of the
feature vectors (the paper's choice for embeddings: K = X X^T with unit rows), so the score is that of the feature
space it is computed in, and comparable only between sets of equal size (the benchmark's methods share n).

A resample that holds sample j c_j times (m = sum c_j) is the multiset it names: its K / m has the nonzero
eigenvalues of W^(1/2) G W^(1/2) (G the Gram matrix of its distinct samples, W = diag(c / m)), or, when there are
more distinct samples than dimensions, of X^T W X (D x D). A duplicate adds no diversity, so a resample scores lower
than the full set; the benchmark's bias-centred interval (benchmark.metrics.intervals) keeps the spread of the
replicates and centres it on the full set's score.

Not in torchmetrics (1.9); the reference implementation (``vendi-score`` on PyPI) takes a similarity function and
has no resampling, so this is written here and tested against hand-computed values.
"""
from __future__ import annotations

import numpy as np

from benchmark.metrics.intervals import _counts


def entropy_exp(eigenvalues: np.ndarray) -> float:
    """exp of the Shannon entropy of nonnegative weights that sum to 1 (rounding negatives dropped)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > 1e-15]
    lam = lam / lam.sum()
    return float(np.exp(-(lam * np.log(lam)).sum()))


def unit_rows(features, what: str = "the sample features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"{what} must be an (n, D) array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{what} hold {int((norms == 0).sum())} all-zero vector(s): their cosine similarity is "
                         f"undefined (a dead feature network?)")
    return x / norms[:, None]


def vendi_score(features) -> float:
    """The Vendi score of the rows of ``features`` under cosine similarity."""
    return VendiResampler(features)()


class VendiResampler:
    """Vendi score of a feature set (n, D), or of a resample of its rows; ``resampler()`` is the full set's."""

    def __init__(self, features):
        self._x = unit_rows(features)
        self.n, self.dim = self._x.shape
        self._gram = self._x @ self._x.T if self.n <= self.dim else None

    def __call__(self, indices: np.ndarray | None = None) -> float:
        counts = _counts(indices, self.n)
        distinct = np.flatnonzero(counts)
        w = counts[distinct] / counts.sum()
        if len(distinct) <= self.dim:
            gram = self._gram[np.ix_(distinct, distinct)] if self._gram is not None \
                else self._x[distinct] @ self._x[distinct].T
            root = np.sqrt(w)
            matrix = root[:, None] * gram * root[None, :]
        else:
            rows = self._x[distinct]
            matrix = rows.T @ (rows * w[:, None])
        return entropy_exp(np.linalg.eigvalsh((matrix + matrix.T) / 2))
