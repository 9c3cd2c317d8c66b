"""Combination rules that wrap any method: APG, CFG-Zero*, FDG. ``rule=NAME`` on any guided method (``linear``, the
default, is the method's own rule alone).

Each changes every guide's update ``delta = eps_c - eps_guide`` before the method's rule combines them, so it composes
with any negative (cfg, dog, autoguidance, icg), with methods of several guides (cfg+dog: each guide's update on its
own) and with a user's rule written on the deltas. For the linear rule ``eps_c + (w - 1) * delta``:

    apg            eps_c + (w - 1) * APG(delta)                     Sadat, Hilliges & Weber, ICLR 2025 (projection.py)
    cfg-zero-star  eps_c + (w - 1) * (eps_c - s* eps_g)             Fan et al. 2025, "CFG-Zero*"
                   = w eps_c + (1 - w) s* eps_g,   s* = <eps_c, eps_g> / ||eps_g||^2 per sample (the paper's optimised
                   scale, on eps instead of the velocity); the first ``zero_steps`` sampling steps return the
                   zero-velocity prediction (zero-init, below)
    fdg            eps_c + (w - 1) * L(delta) + (w - 1) * high_ratio * H(delta)
                   Sadat et al. 2025, "Guidance in the frequency domain enables high-fidelity sampling at low CFG
                   scales" (frequency-decoupled guidance): the low band guided at w_low = w, the high band at
                   w_high = 1 + high_ratio * (w - 1)

FDG's bands: one level of a Haar split over the spatial axes, L = the mean of each 2x2 block (repeated back to full
size), H = delta - L; both linear, L + H = delta. The paper splits the denoised prediction D; D is affine in eps with
a per-sample factor (projection.py), which commutes with a linear band split, so splitting the eps update is the same.
Parameterising the high band by its ratio to the low one keeps w = 1 unguided (no guide forward) at every ratio and
lets FDG wrap methods of several scales; high_ratio = 1 is the plain rule. An input without spatial axes (the 2D
toy) is all low band: FDG is then the plain rule.

CFG-Zero*'s zero-init, translated from flow matching: the paper zeroes the velocity v = eps - x0 of a rectified flow
x_t = (1 - t) x0 + t eps during the first steps, so the ODE does not move. Zero velocity means the denoised and the
noise estimates coincide, eps = x0 = x_t(flow); with the variance-preserving x_t = a x0 + s eps (a = sqrt(alpha_bar),
s = sqrt(1 - alpha_bar)) the same point is x_t / (a + s), so a zero-init step predicts eps = x_t / (a + s) on the
guided channels (a deterministic DDIM step with it stays put on the flow, as the paper's ODE does). A literal eps = 0
would instead claim x_t is noise-free. At the first step (a ~ 0) this is eps ~ x_t, close to what any model predicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from benchmark.guidance.param import Param
from benchmark.guidance.projection import ETA, ETA_OFF, NORM_OFF, NORM_THRESHOLD, TINY, is_projected, project_update

LINEAR, APG, CFG_ZERO_STAR, FDG = "linear", "apg", "cfg-zero-star", "fdg"
ALIASES = {"cfg-zero*": CFG_ZERO_STAR, "cfgzero*": CFG_ZERO_STAR, "cfg-zero": CFG_ZERO_STAR}
ZERO_STEPS, HIGH_RATIO = "zero_steps", "high_ratio"


@dataclass(frozen=True)
class Context:
    """What a combination rule may read besides a guide's update, all per sample on the guided channels: the
    conditional eps, the noisy input x_t, alpha_bar_t (B,) (None when the denoiser was given no noise schedule)."""

    eps: Tensor
    x: Tensor
    alpha_bar: Optional[Tensor]


@dataclass(frozen=True)
class Combination:
    """A combination rule: its parameters, the values at which it changes nothing (``off``; ``always_on`` for a
    rule that has none), its transform of one guide's update, and what it needs."""

    name: str
    title: str
    params: tuple[Param, ...]
    update: Callable[[Tensor, Context, Mapping[str, float]], Tensor]
    off: Mapping[str, float] = field(default_factory=dict)
    always_on: bool = False
    doc: str = ""

    def on(self, params: Mapping[str, float]) -> bool:
        """Whether it changes the method's output at these parameter values (off: not computed at all)."""
        return self.always_on or any(params[name] != value for name, value in self.off.items())

    def zero_steps(self, params: Mapping[str, float]) -> int:
        """How many first sampling steps return the zero-velocity prediction (CFG-Zero*'s zero-init)."""
        return int(params.get(ZERO_STEPS, 0)) if self.name == CFG_ZERO_STAR else 0

    def needs_noise_schedule(self, params: Mapping[str, float]) -> bool:
        return (self.name == APG and is_projected(params)) or self.zero_steps(params) > 0


def _apg(delta: Tensor, ctx: Context, params: Mapping[str, float]) -> Tensor:
    return project_update(delta, ctx.eps, ctx.x, ctx.alpha_bar, params[ETA], params[NORM_THRESHOLD])


def optimised_scale(eps_cond: Tensor, eps_guide: Tensor) -> Tensor:
    """CFG-Zero*'s s* = <eps_c, eps_g> / ||eps_g||^2 per sample (B, 1, ...), over every guided element, in fp32:
    the scale of the guide that best matches the conditional prediction in least squares (0 for an all-zero guide)."""
    dims = tuple(range(1, eps_cond.dim()))
    c, g = eps_cond.float(), eps_guide.float()
    return (c * g).sum(dims, keepdim=True) / (g * g).sum(dims, keepdim=True).clamp_min(TINY)


def _cfg_zero_star(delta: Tensor, ctx: Context, params: Mapping[str, float]) -> Tensor:
    eps_guide = ctx.eps - delta
    return (ctx.eps.float() - optimised_scale(ctx.eps, eps_guide) * eps_guide.float()).to(delta.dtype)


def zero_velocity_eps(x: Tensor, alpha_bar: Tensor) -> Tensor:
    """The eps of a zero rectified-flow velocity at x_t: x_t / (sqrt(alpha_bar) + sqrt(1 - alpha_bar)) (module doc)."""
    ab = alpha_bar.to(device=x.device, dtype=torch.float64).view(-1, *([1] * (x.dim() - 1)))
    return (x.float() / (ab.sqrt() + (1.0 - ab).sqrt()).float()).to(x.dtype)


def low_band(delta: Tensor) -> Tensor:
    """FDG's low band: each 2x2 block's mean over the spatial axes (all axes after the channel axis), repeated back
    to full size; a trailing odd row or column is its own block. No spatial axes: the whole input."""
    spatial = delta.dim() - 2
    if spatial <= 0:
        return delta
    out = delta.float()
    for axis in range(2, delta.dim()):
        size = out.shape[axis]
        if size % 2:  # repeat the last slice, so it averages with itself
            out = torch.cat([out, out.narrow(axis, size - 1, 1)], dim=axis)
        pairs = out.unflatten(axis, (-1, 2)).mean(dim=axis + 1)
        out = pairs.repeat_interleave(2, dim=axis).narrow(axis, 0, size)
    return out.to(delta.dtype)


def _fdg(delta: Tensor, ctx: Context, params: Mapping[str, float]) -> Tensor:
    low = low_band(delta)
    return low + params[HIGH_RATIO] * (delta - low)


COMBINATIONS: dict[str, Combination] = {c.name: c for c in (
    Combination(APG, "APG (Sadat, Hilliges & Weber, ICLR 2025): adaptive projected guidance",
                (Param(ETA, 0.0, 1.0, default=0.0, doc="weight of the update's component parallel to the conditional "
                                                      "denoised prediction (1 = the plain rule, 0 = removed)"),
                 Param(NORM_THRESHOLD, 0.0, 1e4, default=NORM_OFF, doc="the largest norm of the update (x0 units, per "
                                                                        "sample, over the guided channels); 0 = no cap")),
                _apg, off={ETA: ETA_OFF, NORM_THRESHOLD: NORM_OFF},
                doc="each update rescaled to norm <= norm_threshold, then its part along the conditional denoised "
                    "prediction weighted by eta"),
    Combination(CFG_ZERO_STAR, "CFG-Zero* (Fan et al. 2025): optimised scale and zero-init",
                (Param(ZERO_STEPS, 0.0, 1000.0, default=1.0, decimals=0,
                       doc="first sampling steps that return the zero-velocity prediction (0 = no zero-init)"),),
                _cfg_zero_star, always_on=True,
                doc="the guide scaled by s* = <eps_c, eps_g> / ||eps_g||^2 per sample before the rule"),
    Combination(FDG, "FDG (Sadat et al. 2025): frequency-decoupled guidance",
                (Param(HIGH_RATIO, 0.0, 20.0, default=2.0,
                       doc="the high band's update relative to the low band's: w_high = 1 + high_ratio (w - 1)"),),
                _fdg, off={HIGH_RATIO: 1.0},
                doc="low band (2x2 block means) guided at w, high band at 1 + high_ratio (w - 1)"),
)}

RULES = (LINEAR, *COMBINATIONS)  # the rule axis of a design
