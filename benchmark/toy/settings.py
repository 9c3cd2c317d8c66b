"""The toy experiment's settings (the flags of ``dogbench toy``)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_serializer, model_validator

from benchmark.guidance import GuidanceScale, lookup_method
from benchmark.guidance.design import design_cell
from benchmark.settings import Count, Index, Real, Settings

DEFAULT_W_GRID = (1.0, 2.0, 3.0)


class ToyConfig(Settings):
    seed: Index = 0
    """seed of the data, both trainings and the sampler noise"""
    target_points: Count = 200
    """size of the small target fine-tuning set (points)"""
    pretrain_steps: Count = 3000
    """pre-training optimiser steps on the source"""
    finetune_steps: Count = 1500
    """fine-tuning optimiser steps on the target"""
    weak_step: Optional[Count] = Field(None, json_schema_extra={"null_word": "half"})
    """fine-tuning step whose weights are autoguidance's weak guide (default: half the fine-tuning steps)"""
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
    num_samples: Count = 300
    """samples per (method, w) and sampling seed"""
    seeds: Count = 5
    """sampling seeds (each draws its own labels and noise; the models are trained once, with seed): the leaderboard
    gives each metric's mean and 95% t-interval over them"""
    w_grid: list[GuidanceScale] = list(DEFAULT_W_GRID)
    """guidance strengths w (w = 1: unguided); a method with two scales (cfg+dog) gets 1 + (w - 1) / 2 on each"""
    plot_w: GuidanceScale = 2.0
    """guidance strength shown in samples.png and guidance_field.png (must be in w_grid)"""
    apg_methods: list[str] = ["cfg", "dog"]
    """guided methods also run with APG (adaptive projected guidance); empty: none"""
    apg_eta: Real = Field(0.0, ge=0, le=1)
    """APG's weight of the update's part parallel to the denoised prediction (0 removes it)"""
    apg_norm_threshold: Real = Field(0.0, ge=0)
    """APG's cap on the update's norm in x0 units (0 = no cap)"""
    rules: list[str] = ["cfg-zero-star", "fdg"]
    """other combination rules (benchmark.guidance.combine) each of rule_methods also runs with, at the rule's
    default parameters; empty: none. FDG on 2D points has no spatial bands: it equals the linear rule (a check)"""
    rule_methods: list[str] = ["cfg", "dog", "icg"]
    """the negatives the rules are crossed with"""
    field_t: list[Index] = [50, 200]
    """timesteps (training scale) of the guidance-field figure, one row each"""
    field_class: Index = 0
    """target class whose guidance field is drawn"""
    copy_null_row: bool = False
    """start the fine-tuned null-label row from the pre-trained one instead of a fresh table"""
    lora_rank: Optional[Count] = Field(None, json_schema_extra={"null_word": "none"})
    """none = fine-tune every weight; else a LoRA fine-tune of this rank through peft (adapters on every residual
    block's MLP and modulation, the new label table trained in full, alpha = rank), DoG's guide being the same weights
    with the adapter off"""
    threads: Count = 1
    """torch CPU threads (a toy MLP runs fastest on one)"""

    @model_serializer(mode="wrap")
    def _full_finetune_has_no_lora_key(self, handler):
        # a full fine-tune's config (metrics.json) reads as it did before the option existed
        data = handler(self)
        if self.lora_rank is None:
            data.pop("lora_rank", None)
        return data

    @field_validator("w_grid")
    @classmethod
    def _grid(cls, value: list) -> list:
        if not value:
            raise ValueError("is empty; pass e.g. 1,1.5,2,3,4")
        return sorted(set(value))

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list) -> list:
        return [design_cell("cfg", rule).rule for rule in value]  # unknown rule: one line with did-you-mean

    @field_validator("apg_methods", "rule_methods")
    @classmethod
    def _guided(cls, value: list) -> list:
        for name in value:
            if not lookup_method(name)[0].guides:
                raise ValueError(f"{name!r} has no guide to project; pass guided methods, e.g. cfg,dog")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.plot_w not in self.w_grid:
            raise ValueError(f"plot_w {self.plot_w} is not in w_grid {self.w_grid}; add it or pick one of them")
        if self.plot_w == 1.0:
            raise ValueError("plot_w 1.0 is unguided and has no guidance to draw; pick a w > 1 of w_grid")
        if not self.field_t or not all(t < self.diffusion_steps for t in self.field_t):
            raise ValueError(f"field_t {self.field_t} must be timesteps in [0, {self.diffusion_steps - 1}], e.g. 50,200")
        if self.weak_step is not None and self.weak_step >= self.finetune_steps:
            raise ValueError(f"weak_step {self.weak_step} must be before the last of the {self.finetune_steps} "
                             f"fine-tuning steps")
        if self.sample_steps > self.diffusion_steps:
            raise ValueError(f"sample_steps {self.sample_steps} must be at most the {self.diffusion_steps} diffusion steps")
        return self

    def weak_guide_step(self) -> int:
        return self.weak_step if self.weak_step is not None else max(1, self.finetune_steps // 2)
