"""Sampling settings (``sampling:`` in an experiment; the flags of ``dogbench sample``). The method, w and seed of
a sample set are not settings but its coordinates (``RunSpec`` in the harness, flags of ``dogbench sample``).

Each field says what it is to the images (``benchmark.settings.identity``): ``num_samples`` is an ``AMOUNT`` (sample
i depends only on (seed, i), so a folder extends), ``batch_size`` and ``compile`` are ``HOW``, ``guided_channels``
changes only guided images (``GUIDED``) and ``guidance_interval`` is ``FOLDED`` into the method's resolved spec (its
interval is what the identity records). Every other field, and any field added later without a mark, changes the
images, hence the sample folder's name and every hash above it."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator

from benchmark.guidance import GuidanceInterval, GuidanceScale, MethodSpec, lookup_method
from benchmark.settings import AMOUNT, FOLDED, HOW, Count, Index, Precision, Settings, identity

GUIDED = "guided"  # changes guided images only: left out of an unguided set's identity


class SamplingSettings(Settings):
    """How samples are made."""

    num_samples: Count = Field(10000, json_schema_extra=identity(AMOUNT))
    """images per sample set (dataset x method x w x seed); labels uniform over the target classes"""
    steps: Count = 50
    """sampling steps (the 1000 training steps uniformly respaced, DDPM ancestral)"""
    batch_size: Count = Field(256, json_schema_extra=identity(HOW))
    """images per forward batch, per device"""
    guided_channels: Optional[Count] = Field(3, json_schema_extra=identity(GUIDED, null_word="all"))
    """eps channels that get guidance: 3 of the 4 latent channels as the DiT reference code does, or all"""
    clip_denoised: bool = False
    """clip the predicted x0 to [-1, 1] at every step (pixel-space models want it; DiT does not for latents)"""
    guidance_interval: Optional[list[float]] = Field(None, json_schema_extra=identity(FOLDED, null_word="none"))
    """LOW,HIGH timesteps (0..999) where guidance is applied; elsewhere the guide is skipped (the interval parameter
    of every guided method, given here for all of them)"""
    precision: Precision = "tf32"
    """network forwards: fp32, tf32 (the DiT reference's fp32 with TF32 matmuls) or bf16 (autocast)"""
    decode_precision: Precision = "tf32"
    """VAE decoding: fp32, tf32 or bf16"""
    compile: Optional[bool] = Field(None, json_schema_extra=identity(HOW, null_word="auto"))
    """torch.compile the networks; auto = on for CUDA devices"""

    @field_validator("guidance_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        interval = GuidanceInterval.parse(value)
        return None if interval is None else [interval.low, interval.high]

    def interval(self) -> Optional[GuidanceInterval]:
        return GuidanceInterval.parse(self.guidance_interval)

    def identity_for(self, spec: MethodSpec, *leave_out: str) -> dict:
        """What of these settings the images of ``spec`` (a resolved method) depend on: the marked fields, without
        the guided-only ones for an unguided spec, and for a guided one the interval its resolved spec guides in."""
        out = self.identity(FOLDED, *leave_out, *(() if spec.guided else (GUIDED,)))
        if spec.guided:
            out["guidance_interval"] = None if spec.interval is None else [spec.interval.low, spec.interval.high]
        return out

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
