"""The toy experiment's settings (the flags of ``dogbench toy``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from benchmark.guidance import GuidanceScale
from benchmark.settings import Count, Index, Real, Settings

DEFAULT_W_GRID = (1.0, 1.5, 2.0, 3.0, 4.0)


class ToyConfig(Settings):
    seed: Index = 0
    """seed of the data, both trainings and the sampler noise"""
    target_points: Count = 200
    """size of the small target fine-tuning set (points)"""
    pretrain_steps: Count = 3000
    """pre-training optimiser steps on the source"""
    finetune_steps: Count = 1500
    """fine-tuning optimiser steps on the target"""
    batch_size: Count = 256
    """training batch size (points)"""
    pretrain_lr: Real = Field(2e-3, gt=0)
    """peak AdamW learning rate of pre-training (cosine decay)"""
    finetune_lr: Real = Field(1e-3, gt=0)
    """peak AdamW learning rate of fine-tuning (cosine decay)"""
    label_dropout: Real = Field(0.1, ge=0, lt=1)
    """probability of replacing a label by the null label in training (both stages, as in DiT)"""
    hidden: Count = 128
    """MLP width (features)"""
    depth: Count = 3
    """number of residual MLP blocks"""
    diffusion_steps: Count = 1000
    """training diffusion steps"""
    sample_steps: Count = 100
    """DDPM sampling steps (respaced from diffusion_steps)"""
    sampler_variance: Literal["small", "large"] = "large"
    """DDPM step variance: posterior (small) or beta_t (large, DiT's fixed-variance default)"""
    num_samples: Count = 2000
    """samples per (method, w)"""
    w_grid: list[GuidanceScale] = list(DEFAULT_W_GRID)
    """guidance scales w (w = 1: unguided)"""
    plot_w: GuidanceScale = 2.0
    """guidance scale shown in samples.png (must be in w_grid)"""
    field_t: list[Index] = [50, 200]
    """timesteps (training scale) of the guidance-field figure, one row each"""
    field_class: Index = 0
    """target class whose guidance field is drawn"""
    copy_null_row: bool = False
    """start the fine-tuned null-label row from the pre-trained one instead of a fresh table"""
    threads: Count = 1
    """torch CPU threads (a toy MLP runs fastest on one)"""

    @field_validator("w_grid")
    @classmethod
    def _grid(cls, value: list) -> list:
        if not value:
            raise ValueError("is empty; pass e.g. 1,1.5,2,3,4")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self):
        if self.plot_w not in self.w_grid:
            raise ValueError(f"plot_w {self.plot_w} is not in w_grid {self.w_grid}; add it or pick one of them")
        if not self.field_t or not all(t < self.diffusion_steps for t in self.field_t):
            raise ValueError(f"field_t {self.field_t} must be timesteps in [0, {self.diffusion_steps - 1}], e.g. 50,200")
        if self.sample_steps > self.diffusion_steps:
            raise ValueError(f"sample_steps {self.sample_steps} must be at most the {self.diffusion_steps} diffusion steps")
        return self
