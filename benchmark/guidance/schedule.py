"""When a method guides: a schedule weights the method's update per sampling step.

    eps = eps_c + s * (rule(eps_c, deltas, params) - eps_c),      s = schedule weight in [0, 1]

s = 1 is the method as declared and s = 0 the conditional prediction; both are taken exactly (no arithmetic), and a
step at which no sample of the batch has s > 0 runs no guide forward at all (and counts none in ``nfe``). For a linear
rule the weight scales (w - 1), so a ramp is a guidance scale that changes over sampling.

    constant    s = 1 at every step
    interval    s = 1 for timesteps t_low <= t <= t_high, else 0 (Kynkaanniemi et al. 2024, "Applying guidance in a
                limited interval improves sample and distribution quality"); t on the training scale 0..999
    ramp-up     s = ramp_up_start + (1 - ramp_up_start) * progress: weak at the first (noisiest) step, full at the end
    ramp-down   s = 1 - (1 - ramp_down_end) * progress: full at the first step, weak at the end

``progress`` is the fraction of sampling steps done (0 at the first step, (N - 1) / N at the last; steps.py), so a ramp
means the same at any step count. The weights are per sample, from tensors, so they cost no wait on the device; only
deciding to skip a step's guide forwards reads one flag back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from benchmark.guidance.param import Param
from benchmark.guidance.scale import GuidanceInterval

CONSTANT, INTERVAL_SCHEDULE, RAMP_UP, RAMP_DOWN = "constant", "interval", "ramp-up", "ramp-down"
T_LOW, T_HIGH = "t_low", "t_high"

# weight(t (B,) long, progress (B,) float, params) -> (B,) float in [0, 1], or None for 1 everywhere
Weight = Callable[[Tensor, Tensor, Mapping[str, float]], Optional[Tensor]]


@dataclass(frozen=True)
class Schedule:
    """A named schedule: its parameters (numbers grids and Optuna can search) and its per-sample weight."""

    name: str
    params: tuple[Param, ...]
    weight: Weight
    doc: str = ""

    def interval(self, params: Mapping[str, float]) -> Optional[GuidanceInterval]:
        """The guidance interval of an ``interval`` schedule (the sample identity records it as it always did)."""
        return GuidanceInterval(params[T_LOW], params[T_HIGH]) if self.name == INTERVAL_SCHEDULE else None


def _constant(t: Tensor, progress: Tensor, params: Mapping[str, float]) -> None:
    return None


def _interval(t: Tensor, progress: Tensor, params: Mapping[str, float]) -> Tensor:
    return GuidanceInterval(params[T_LOW], params[T_HIGH]).mask(t).float()


def _ramp_up(t: Tensor, progress: Tensor, params: Mapping[str, float]) -> Tensor:
    start = params["ramp_up_start"]
    return start + (1.0 - start) * progress


def _ramp_down(t: Tensor, progress: Tensor, params: Mapping[str, float]) -> Tensor:
    return 1.0 - (1.0 - params["ramp_down_end"]) * progress


def _timestep(name: str, default: float, doc: str) -> Param:
    return Param(name, 0.0, 1e4, default=default, doc=doc)


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule(CONSTANT, (), _constant, "guide at every step"),
    Schedule(INTERVAL_SCHEDULE, (_timestep(T_LOW, 0.0, "lowest timestep guided (training scale 0..999)"),
                                 _timestep(T_HIGH, 700.0, "highest timestep guided (training scale 0..999)")),
             _interval, "guide only for timesteps t_low <= t <= t_high (Kynkaanniemi et al. 2024)"),
    Schedule(RAMP_UP, (Param("ramp_up_start", 0.0, 1.0, default=0.0,
                             doc="weight of the update at the first step (1 = constant)"),),
             _ramp_up, "weight of the update rises linearly with progress, from ramp_up_start to 1"),
    Schedule(RAMP_DOWN, (Param("ramp_down_end", 0.0, 1.0, default=0.0,
                               doc="weight of the update at progress 1 (1 = constant)"),),
             _ramp_down, "weight of the update falls linearly with progress, from 1 to ramp_down_end"),
)}


def blend(eps: Tensor, guided: Tensor, weight: Optional[Tensor]) -> Tensor:
    """``eps + weight * (guided - eps)`` per sample, taking ``guided`` exactly where weight = 1 and ``eps`` exactly
    where it is 0 (an interval schedule is bit-identical to choosing one or the other)."""
    if weight is None:
        return guided
    w = weight.to(eps.dtype).view(-1, *([1] * (eps.dim() - 1)))
    mixed = eps + w * (guided - eps)
    return torch.where(w >= 1, guided, torch.where(w <= 0, eps, mixed))
