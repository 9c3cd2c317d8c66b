"""Sampling settings (``sampling:`` in an experiment; the flags of ``dogbench sample``). The method, w and seed of
a sample set are not settings but its coordinates (``RunSpec`` in the harness, flags of ``dogbench sample``)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator

from benchmark.guidance import GuidanceInterval, GuidanceScale, lookup_method
from benchmark.settings import Count, Index, Precision, Settings


class SamplingSettings(Settings):
    """How samples are made."""

    num_samples: Count = 10000
    """images per sample set (dataset x method x w x seed); labels uniform over the target classes"""
    steps: Count = 50
    """sampling steps (the 1000 training steps uniformly respaced, DDPM ancestral)"""
    batch_size: Count = 256
    """images per forward batch, per device"""
    guided_channels: Optional[Count] = Field(3, json_schema_extra={"null_word": "all"})
    """eps channels that get guidance: 3 of the 4 latent channels as the DiT reference code does, or all"""
    clip_denoised: bool = False
    """clip the predicted x0 to [-1, 1] at every step (pixel-space models want it; DiT does not for latents)"""
    guidance_interval: Optional[list[float]] = Field(None, json_schema_extra={"null_word": "none"})
    """LOW,HIGH timesteps (0..999) where guidance is applied; elsewhere the guide is skipped (the interval parameter
    of every guided method, given here for all of them)"""
    precision: Precision = "tf32"
    """network forwards: fp32, tf32 (the DiT reference's fp32 with TF32 matmuls) or bf16 (autocast)"""
    decode_precision: Precision = "tf32"
    """VAE decoding: fp32, tf32 or bf16"""
    compile: Optional[bool] = Field(None, json_schema_extra={"null_word": "auto"})
    """torch.compile the networks; auto = on for CUDA devices"""

    @field_validator("guidance_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        interval = GuidanceInterval.parse(value)
        return None if interval is None else [interval.low, interval.high]

    def interval(self) -> Optional[GuidanceInterval]:
        return GuidanceInterval.parse(self.guidance_interval)

    def compiled_on(self, device_type: str) -> bool:
        return device_type == "cuda" if self.compile is None else self.compile


class SamplePoint(Settings):
    """The coordinates of one sample set."""

    method: str = "dog"
    """guidance method: none (fine-tune only), cfg (the fine-tune's own null label), dog (the pre-trained model's),
    cfg+dog, autoguidance, icg, or module:attribute naming your own (benchmark.guidance.Method); dogbench methods
    lists them"""
    w: GuidanceScale = 1.5
    """guidance scale in [0, 20] of a method with one scale; 1 = unguided"""
    seed: Index = 0
    """sample i draws its label and noise from a generator seeded by (seed, i)"""

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        lookup_method(value)  # a registry name, or module:attribute that imports and is a method
        return value.strip()
