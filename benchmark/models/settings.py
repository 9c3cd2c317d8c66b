"""The models' settings: the source model (``source:`` in an experiment, ``dogbench finetune``'s ``--source``,
``--model``, ``--source-classes``, ``--image-size``): the pre-trained DiT that is fine-tuned and that DoG uses as its
guide; a DiT built from scratch (``dogbench pretrain``); and the autoencoder between images and the model's space."""
from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional, Union

from pydantic import Field, field_validator

from benchmark.errors import did_you_mean
from benchmark.models.autoencoder import AUTOENCODER_NAMES, DEFAULT_VAE
from benchmark.models.dit import DiT, DiT_models
from benchmark.settings import HOW, Count, Settings, identity

__all__ = ["AUTOENCODER_NAMES", "ArchitectureSettings", "Autoencoder", "AutoencoderSettings", "SourceSettings"]

Autoencoder = Annotated[str, Field(description=f"image <-> latent map: {', '.join(AUTOENCODER_NAMES)} (pixel "
                                               f"space), or a local diffusers AutoencoderKL folder")]


def _known_model(value: Any) -> Any:
    """A DiT config name, or a mapping of DiT constructor arguments."""
    if isinstance(value, dict):
        allowed = [p for p in inspect.signature(DiT.__init__).parameters if p != "self"]
        for name in value:
            if name not in allowed:
                raise ValueError(f"unknown DiT argument {name!r}{did_you_mean(name, allowed)} "
                                 f"(allowed: {', '.join(allowed)})")
        return dict(value)
    if value is not None and value not in DiT_models:
        raise ValueError(f"{value!r} is not a known DiT config{did_you_mean(value, DiT_models)} "
                         f"(known: {', '.join(DiT_models)}; or give a mapping of DiT arguments)")
    return value


class SourceSettings(Settings):
    """The pre-trained model. Null fields are read from the checkpoint (its saved config, else its shapes)."""

    checkpoint: str = "DiT-XL-2-256x256.pt"
    """a .pt path (relative to the experiment file) or a DiT release name found in the checkpoint search dirs"""
    model: Union[None, str, dict] = "DiT-XL/2"
    """a named DiT config (DiT-XL/2, DiT-S/4, DiT-N/4, ...) or a mapping of DiT constructor arguments"""
    num_classes: Optional[Count] = 1000
    """classes of the source model; its null (unconditional) label is this number"""
    image_size: Optional[Count] = 256
    """image side in pixels (the latent side is image_size / 8 with the SD-VAE)"""
    sanity_check: bool = Field(True, json_schema_extra=identity(HOW))
    """before fine-tuning, refuse a source that does not denoise the target: its noise-prediction error on 32 target
    images must be below 0.5 (the shipped pre-trained source: 0.08; predicting no noise: 1.0; damaged weights: more,
    benchmark/training/probe.py); false for random stand-in weights, which fail it"""

    @field_validator("model")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _known_model(value)

    @classmethod
    def from_checkpoint(cls, checkpoint: str) -> "SourceSettings":
        """A checkpoint whose file says the rest (its architecture, classes and image size); not probed (the command
        line and the harness ask for the probe through ``sanity_check``)."""
        return cls(checkpoint=str(checkpoint), model=None, num_classes=None, image_size=None, sanity_check=False)


class ArchitectureSettings(Settings):
    """A DiT built from scratch (``dogbench pretrain``): its input size, channels and classes follow the data."""

    model: Union[str, dict]
    """a named DiT config (DiT-N/2, DiT-Ti/4, DiT-S/2, ...) or a mapping of DiT constructor arguments"""
    image_size: Optional[Count] = None
    """image side in pixels (null: the dataset's)"""
    learn_sigma: bool = True
    """predict the variance as well as eps (as DiT does); off: fixed variance"""

    @field_validator("model")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _known_model(value)


class AutoencoderSettings(Settings):
    """The space a model works in."""

    autoencoder: Autoencoder = DEFAULT_VAE
