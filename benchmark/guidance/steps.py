"""Where in sampling a denoiser call is: the ``at`` argument of a step-aware rule, and the table that finds it.

A sampler visits a fixed list of the model's timesteps (50 of the 1000 training timesteps, uniformly respaced, for
the benchmark's protocol), from the noisiest down. A call at timestep t is sampling step ``index`` of ``steps``:
the number of visited timesteps above t. ``progress = index / steps`` is the fraction of steps already done: 0 at the
first step, ``(steps - 1) / steps`` at the last. The table is built once per device, so looking steps up during
sampling never waits for the device.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

TRAINING_TIMESTEPS = 1000  # DiT's; a denoiser told nothing else assumes a sampler that visits every one of them


@dataclass(frozen=True)
class Step:
    """The ``at`` of ``rule(eps_cond, deltas, params, at)``: the model's timestep ``t`` for this call (training scale,
    0..T-1), sampling step ``index`` of ``steps`` (0 = the first, noisiest one) and ``progress = index / steps``."""

    t: int
    progress: float
    index: int
    steps: int


class SamplingSteps:
    """The timesteps a sampler visits, and per timestep its step index (``index``) and ``progress``."""

    def __init__(self, timesteps: Optional[Sequence[int]] = None):
        visited = sorted({int(t) for t in (range(TRAINING_TIMESTEPS) if timesteps is None else timesteps)},
                         reverse=True)
        if not visited or visited[-1] < 0:
            raise ValueError(f"sampling timesteps {list(timesteps or [])[:5]} must be non-empty and >= 0")
        self.timesteps = tuple(visited)  # in the order a sampler visits them
        self.steps = len(visited)
        ascending = visited[::-1]
        # index of t = how many visited timesteps exceed it (a timestep between visited ones sits where it would be)
        above = [self.steps - bisect.bisect_right(ascending, t) for t in range(visited[0] + 1)]
        self._index = above
        self._tables: dict[torch.device, Tensor] = {}

    def __eq__(self, other) -> bool:
        return isinstance(other, SamplingSteps) and self.timesteps == other.timesteps

    def __hash__(self) -> int:
        return hash(self.timesteps)

    def index_of(self, t: int) -> int:
        return self._index[min(max(int(t), 0), len(self._index) - 1)]

    def step(self, t: int) -> Step:
        index = self.index_of(t)
        return Step(int(t), index / self.steps, index, self.steps)

    def index(self, t: Tensor) -> Tensor:
        """Per-sample step index (long, on t's device) of timesteps ``t``."""
        table = self._tables.get(t.device)
        if table is None:
            table = self._tables[t.device] = torch.tensor(self._index, dtype=torch.long, device=t.device)
        return table[t.long().clamp(0, len(self._index) - 1)]

    def progress(self, index: Tensor) -> Tensor:
        return index.float() / self.steps
