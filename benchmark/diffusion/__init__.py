"""DiT's Gaussian diffusion and uniform respacing. ``create_diffusion("50")`` is the 50-step sampler of the
benchmark protocol; ``create_diffusion()`` (no respacing) is the 1000-step training diffusion."""
from __future__ import annotations

from typing import Optional

from benchmark.diffusion.gaussian import GaussianDiffusion, cosine_beta_schedule, linear_beta_schedule, mean_flat
from benchmark.diffusion.respace import SpacedDiffusion, space_timesteps


def create_diffusion(
    timestep_respacing: Optional[str | int] = None,
    noise_schedule: str = "linear",
    learn_sigma: bool = True,
    sigma_small: bool = False,
    diffusion_steps: int = 1000,
) -> SpacedDiffusion:
    """DiT's defaults: linear betas, 1000 steps, learned-range variance (fixed-large without ``learn_sigma``),
    eps prediction, MSE + VB loss. ``timestep_respacing`` ``None``/``""`` keeps every step."""
    if noise_schedule == "linear":
        betas = linear_beta_schedule(diffusion_steps)
    elif noise_schedule in ("cosine", "squaredcos_cap_v2"):
        betas = cosine_beta_schedule(diffusion_steps)
    else:
        raise ValueError(f"unknown noise schedule {noise_schedule!r}; use 'linear' or 'cosine'")
    respacing = str(timestep_respacing) if timestep_respacing not in (None, "") else str(diffusion_steps)
    variance = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    return SpacedDiffusion(space_timesteps(diffusion_steps, respacing), betas, variance_type=variance)


__all__ = ["create_diffusion", "GaussianDiffusion", "SpacedDiffusion", "space_timesteps", "mean_flat"]
