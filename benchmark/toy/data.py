"""The toy's two domains: labelled mixtures of isotropic Gaussians in R^2, one mode per class.

The source is a broad grid of many modes (the "pre-training" domain); the target is a small, shifted sub-domain:
a 2x2 block of the source grid moved by a fraction of the grid spacing and sharpened, so every target mode lies
near a source mode but not on it. Because both densities are known exactly, sample quality can be scored against
the true target density instead of a learned feature space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of isotropic 2D Gaussians; mode k is class k."""

    means: Tensor    # (K, 2)
    stds: Tensor     # (K,)  isotropic standard deviation of each mode
    weights: Tensor  # (K,)  mixture weights, sum to 1

    def __post_init__(self):
        if self.means.ndim != 2 or self.means.shape[1] != 2:
            raise ValueError(f"mixture means must have shape (K, 2), got {tuple(self.means.shape)}")
        k = self.means.shape[0]
        if self.stds.shape != (k,) or self.weights.shape != (k,):
            raise ValueError(f"mixture stds and weights must have shape ({k},)")
        if bool((self.stds <= 0).any()) or not math.isclose(float(self.weights.sum()), 1.0, rel_tol=1e-5):
            raise ValueError("mixture stds must be positive and weights must sum to 1")

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    def sample_labels(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.multinomial(self.weights, n, replacement=True, generator=generator)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """``n`` points and their class labels."""
        y = self.sample_labels(n, generator)
        noise = torch.randn(n, 2, generator=generator, dtype=self.means.dtype)
        return self.means[y] + self.stds[y, None] * noise, y

    def mahalanobis(self, x: Tensor) -> Tensor:
        """(N, K) Mahalanobis distance of every point to every mode (Euclidean distance in units of that mode's std)."""
        return torch.cdist(x.to(self.means.dtype), self.means) / self.stds

    def component_log_prob(self, x: Tensor) -> Tensor:
        """(N, K): log N(x; mu_k, std_k^2 I)."""
        d2 = self.mahalanobis(x) ** 2
        return -0.5 * d2 - 2 * torch.log(self.stds) - math.log(2 * math.pi)

    def log_prob(self, x: Tensor) -> Tensor:
        """(N,): the exact log density of the mixture."""
        return torch.logsumexp(self.component_log_prob(x) + torch.log(self.weights), dim=1)

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        """The exact 2x2 covariance of the mixture: E[within-mode cov] + cov of the mode means."""
        mu = self.mean()
        centred = self.means - mu
        between = (self.weights[:, None] * centred).T @ centred
        within = float((self.weights * self.stds**2).sum()) * torch.eye(2, dtype=self.means.dtype)
        return within + between


def _mixture(means: Tensor, std: float) -> GaussianMixture:
    k = means.shape[0]
    return GaussianMixture(means, torch.full((k,), float(std), dtype=means.dtype), torch.full((k,), 1.0 / k, dtype=means.dtype))


def grid_means(side: int, spacing: float) -> Tensor:
    """Centres of a ``side`` x ``side`` grid with the given spacing, centred on the origin; row-major order."""
    axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


# Defaults chosen so the data sit at roughly unit scale (what the diffusion's N(0, I) prior expects), source modes are
# well separated (spacing / std = 10), and each target mode is ~3.6 source stds from its nearest source mode: near,
# but a sample sitting on the source mode is outside the target's 3-sigma support.
SOURCE_SIDE = 6
SOURCE_SPACING = 0.8
SOURCE_STD = 0.08
TARGET_BLOCK = (2, 2)              # (row, col) of the top-left source mode of the 2x2 block the target is taken from
TARGET_SHIFT = (0.24, 0.16)        # how far the target block is moved off the source grid
TARGET_STD = 0.06


def source_mixture(side: int = SOURCE_SIDE, spacing: float = SOURCE_SPACING, std: float = SOURCE_STD) -> GaussianMixture:
    """The pre-training domain: ``side**2`` equally weighted modes on a grid, one class each."""
    if side < 2:
        raise ValueError(f"source grid side={side} must be at least 2")
    return _mixture(grid_means(side, spacing), std)


def target_mixture(
    source: Optional[GaussianMixture] = None,
    block: Tuple[int, int] = TARGET_BLOCK,
    shift: Tuple[float, float] = TARGET_SHIFT,
    std: float = TARGET_STD,
) -> GaussianMixture:
    """The fine-tuning domain: a 2x2 block of ``source``'s grid, moved by ``shift`` and given its own std (4 classes)."""
    source = source if source is not None else source_mixture()
    side = math.isqrt(source.num_classes)
    r, c = block
    if side * side != source.num_classes or not (0 <= r < side - 1 and 0 <= c < side - 1):
        raise ValueError(f"target block {block} must name the top-left mode of a 2x2 block inside the {side}x{side} source grid")
    rows = [(r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)]
    means = torch.stack([source.means[i * side + j] for i, j in rows]) + torch.tensor(shift, dtype=source.means.dtype)
    return _mixture(means, std)
