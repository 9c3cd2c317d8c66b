"""Feature statistics as a torchmetrics ``Metric``: what a Gaussian fit (and PRDC, and a bootstrap) needs from a
stream of feature batches.

Under several processes each rank ``update``s with its own shard of the images; ``compute`` combines the ranks
through torchmetrics' synchronisation, so a multi-GPU evaluation gives the statistics of the whole set by
construction. Two modes:

- ``keep_features=True`` (evaluation): the rows and their indices are gathered, put back in image order, and the
  Gaussian is fitted in two passes (``gaussian_stats``), bit for bit what a single process computes.
- ``keep_features=False``: only float64 sums are kept and summed across ranks (memory independent of the set size):

      mu = S1 / n,   Sigma = (S2 - n mu mu^T) / (n - 1)

  which equals the two-pass estimate to ~1e-12 relative in float64 at the sizes used here.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from benchmark.metrics.frechet import gaussian_stats


class FeatureStatistics(Metric):
    """Streaming Gaussian statistics (and optionally the rows) of feature vectors of dimension ``dim``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, dim: int, keep_features: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.keep_features = int(dim), keep_features
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        if keep_features:
            self.add_state("rows", [], dist_reduce_fx="cat")
            self.add_state("order", [], dist_reduce_fx="cat")  # each row's index in the whole set
        else:
            self.add_state("total", torch.zeros(self.dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("outer", torch.zeros(self.dim, self.dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor, indices: torch.Tensor | None = None) -> None:
        """Add a batch (B, dim). With kept features, ``indices`` (B,) are the rows' positions in the whole set, so
        that the gathered rows come back in image order whichever rank computed them."""
        x = torch.as_tensor(features)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be (B, {self.dim}), got {tuple(x.shape)}")
        self.count += x.shape[0]
        if self.keep_features:
            if indices is None or len(indices) != len(x):
                raise ValueError("keep_features needs one index per row")
            self.rows.append(x.float())
            self.order.append(torch.as_tensor(indices, dtype=torch.long, device=x.device))
        else:
            x = x.to(self.total.device, torch.float64)
            self.total += x.sum(0)
            self.outer += x.T @ x

    def compute(self) -> dict:
        """{"n", "mu", "sigma"} as numpy float64, plus "features" (N, dim) float32 in image order when kept."""
        n = int(self.count)
        if n < 2:
            raise ValueError(f"need at least 2 feature vectors for Gaussian statistics, got {n}")
        if self.keep_features:
            rows, order = _as_tensor(self.rows), _as_tensor(self.order)
            features = rows[torch.argsort(order)].cpu().numpy().astype(np.float32)
            mu, sigma = gaussian_stats(features)
            return {"n": n, "mu": mu, "sigma": sigma, "features": features}
        mu = self.total / n
        sigma = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return {"n": n, "mu": mu.cpu().numpy(), "sigma": ((sigma + sigma.T) / 2).cpu().numpy()}


def _as_tensor(state) -> torch.Tensor:
    # before a sync a cat state is a list of batches; after one it is a single tensor
    return torch.cat(state) if isinstance(state, list) else state
