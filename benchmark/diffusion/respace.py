"""Uniform respacing: sample with a subset of the 1000 training timesteps (e.g. 50) by building the diffusion
whose betas make the kept steps' alphas_cumprod identical to the originals, and mapping the model's timestep
input back to the original scale."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from benchmark.diffusion.gaussian import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """Which original timesteps to keep. ``"50"`` keeps 50 evenly strided steps (first and last included);
    ``"10,15,20"`` splits the range into three equal sections with that many steps each; ``"ddim50"`` uses DDIM's
    fixed integer stride."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
        start += size
    return set(kept)


class SpacedDiffusion(GaussianDiffusion):
    """A GaussianDiffusion over the kept timesteps. Timestep arguments are indices into the kept steps; models
    are called with the original timestep (``timestep_map[t]``), which is what they were trained on."""

    def __init__(self, use_timesteps, base_betas: np.ndarray, **kwargs):
        base = GaussianDiffusion(base_betas, **kwargs)
        self.original_num_steps = base.num_timesteps
        self.original_alphas_cumprod = base.alphas_cumprod  # alpha_bar by original timestep, what a model's t means
        self.timestep_map = sorted(use_timesteps)
        last, betas = 1.0, []
        for i in self.timestep_map:
            betas.append(1 - base.alphas_cumprod[i] / last)
            last = base.alphas_cumprod[i]
        super().__init__(np.array(betas), **kwargs)
        self._map_tables: dict[torch.device, Tensor] = {}

    def wrap_model(self, model: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if getattr(model, "_respaced_by", None) is self:
            return model

        def wrapped(x, t, **kwargs):
            table = self._map_tables.get(t.device)
            if table is None:
                table = self._map_tables[t.device] = torch.tensor(self.timestep_map, device=t.device, dtype=torch.long)
            return model(x, table[t], **kwargs)

        wrapped._respaced_by = self
        return wrapped

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self.wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self.wrap_model(model), *args, **kwargs)
