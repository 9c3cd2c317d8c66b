"""Exact sample-quality metrics for the toy, scored against the known target mixture (no learned features)."""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from benchmark.metrics.frechet import frechet_distance as shared
from benchmark.toy.data import GaussianMixture

OOD_RADIUS = 3.0  # in Mahalanobis units (target stds): farther than this from every target mode is out of domain


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """The project's Frechet distance (benchmark.metrics.frechet) on torch statistics."""

    return shared(*(a.double().cpu().numpy() for a in (mu1, cov1, mu2, cov2)))


def sample_moments(x: Tensor):
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def out_of_domain_rate(x: Tensor, target: GaussianMixture, radius: float = OOD_RADIUS) -> float:
    """Fraction of points farther than ``radius`` target stds from every target mode."""
    return float((target.mahalanobis(x).min(dim=1).values > radius).double().mean())


def off_class_rate(x: Tensor, y: Tensor, target: GaussianMixture, radius: float = OOD_RADIUS) -> float:
    """Fraction of points farther than ``radius`` stds from the mode of the class they were generated for."""
    d = target.mahalanobis(x).gather(1, y.view(-1, 1)).squeeze(1)
    return float((d > radius).double().mean())


RAYLEIGH_MEDIAN = math.sqrt(2 * math.log(2))  # median distance of a 2D standard normal draw from its mean


def spread_ratio(x: Tensor, y: Tensor, target: GaussianMixture) -> float:
    """Median Mahalanobis distance of samples to the mode of their class, over that of exact draws: 1 for the true
    spread, < 1 when samples collapse toward the mode centres (lost diversity), > 1 when they scatter. The median
    keeps a few far outliers from dominating."""
    d = target.mahalanobis(x).gather(1, y.view(-1, 1)).squeeze(1)
    return float(d.median()) / RAYLEIGH_MEDIAN


def toy_metrics(x: Tensor, target: GaussianMixture, y: Optional[Tensor] = None, radius: float = OOD_RADIUS) -> Dict[str, float]:
    """Every toy metric for samples ``x`` (N, 2) (and, when given, the labels ``y`` they were generated for).

    ``nll`` is the mean -log p_target(x) in nats (dominated by far outliers by design: an off-support sample is a
    failure); ``nll_median`` shows the typical sample. Sample NLL rewards collapse onto the mode centres (it can go
    below the exact draws' value, the target's entropy), so read it with ``spread_ratio``. ``fd`` compares the sample
    mean/cov with the exact target mixture's mean/cov (2D: it sees only the first two moments).
    """
    x = x.detach().double().cpu()
    nll = -target.log_prob(x)
    mu, cov = sample_moments(x)
    out = {
        "ood_rate": out_of_domain_rate(x, target, radius),
        "nll": float(nll.mean()),
        "nll_median": float(nll.median()),
        "fd": frechet_distance(mu, cov, target.mean(), target.cov()),
    }
    if y is not None:
        out["off_class_rate"] = off_class_rate(x, y.cpu(), target, radius)
        out["spread_ratio"] = spread_ratio(x, y.cpu(), target)
    return out
