"""Frechet distance between two Gaussians fitted to feature sets (FID, FD_DINOv2, fd_effnet).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

The usual implementation takes ``scipy.linalg.sqrtm(S1 @ S2)``, a non-symmetric matrix whose square root can come back
complex or NaN when the covariances are near-singular (fewer samples than feature dimensions, as with a few thousand
images in Inception's 2048-d space). S1 S2 is similar to the symmetric PSD matrix  A = S1^(1/2) S2 S1^(1/2), so
tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of A). Symmetric eigendecompositions are backward stable and the tiny
negative eigenvalues that rounding produces are clipped to zero, so the result is always real and finite.
"""
from __future__ import annotations

import numpy as np


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows are samples) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need a (N>=2, D) feature matrix for Gaussian statistics, got shape {x.shape}")
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (len(x) - 1)
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric PSD sigma1, sigma2."""
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched Gaussian statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # Rounding can push an exact zero (identical inputs) a hair below zero; a distance is never negative.
    return float(max(value, 0.0))


def frechet_distance_from_features(features1, features2) -> float:
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
