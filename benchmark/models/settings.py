"""The source model's settings (``source:`` in an experiment): the pre-trained DiT that is fine-tuned and that DoG
uses as its guide."""
from __future__ import annotations

import inspect
from typing import Any, Union

from pydantic import field_validator

from benchmark.errors import did_you_mean
from benchmark.models.autoencoder import AUTOENCODER_NAMES
from benchmark.models.dit import DiT, DiT_models
from benchmark.settings import Count, Settings

__all__ = ["AUTOENCODER_NAMES", "SourceSettings"]


class SourceSettings(Settings):
    """The pre-trained model."""

    checkpoint: str = "DiT-XL-2-256x256.pt"
    """a .pt path (relative to the experiment file) or a DiT release name found in the checkpoint search dirs"""
    model: Union[str, dict] = "DiT-XL/2"
    """a named DiT config (DiT-XL/2, DiT-S/4, DiT-N/4, ...) or a mapping of DiT constructor arguments"""
    num_classes: Count = 1000
    """classes of the source model; its null (unconditional) label is this number"""
    image_size: Count = 256
    """image side in pixels (the latent side is image_size / 8 with the SD-VAE)"""
    sanity_check: bool = True
    """before fine-tuning, refuse a source that does not denoise the target: its noise-prediction error on 32 target
    images must be below 0.5 (the shipped pre-trained source: 0.08; predicting no noise: 1.0; damaged weights: more,
    benchmark/training/probe.py); false for random stand-in weights, which fail it"""

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: Any) -> Any:
        if isinstance(value, dict):
            allowed = [p for p in inspect.signature(DiT.__init__).parameters if p != "self"]
            for name in value:
                if name not in allowed:
                    raise ValueError(f"unknown DiT argument {name!r}{did_you_mean(name, allowed)} "
                                     f"(allowed: {', '.join(allowed)})")
            return dict(value)
        if value not in DiT_models:
            raise ValueError(f"{value!r} is not a known DiT config{did_you_mean(value, DiT_models)} "
                             f"(known: {', '.join(DiT_models)}; or give a mapping of DiT arguments)")
        return value
