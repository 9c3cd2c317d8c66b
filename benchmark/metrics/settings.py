"""Evaluation settings (``evaluation:`` in an experiment; the flags of ``dogbench evaluate``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from benchmark.errors import did_you_mean
from benchmark.metrics.registry import METRICS
from benchmark.settings import FOLDED, HOW, Count, Settings, identity


class EvaluationSettings(Settings):
    """Metrics between generated samples and the target's real images."""

    metrics: list[str] = ["fid", "fd_dinov2"]
    """metrics to compute: fid, fd_dinov2, prdc (DINOv2), fd_effnet, prdc_effnet (offline EfficientNet-Lite0); the
    card: kid_, class_kid_, vendi_, copy_ + inception, dinov2 or effnet (e.g. kid_effnet), and cmmd (CLIP, optional);
    what each is: benchmark.metrics.registry"""
    ref_split: Literal["train", "test", "all"] = "all"
    """real images of the reference statistics"""
    reference: Literal["all", "subsample"] = Field("all", json_schema_extra=identity(FOLDED))  # as max_images
    """all: every image of ref_split (a seeded subset when there are more than max_reference_images);
    subsample: as dgm-eval --nsample, a seeded subset of as many real images as there are samples"""
    max_reference_images: Count = Field(50000, json_schema_extra=identity(FOLDED))  # as max_images
    """cap on real (and generated) images per set, a seeded subset beyond it (dgm-eval's default)"""
    batch_size: Count = Field(256, json_schema_extra=identity(HOW))
    """images per feature-network forward pass"""

    def max_images(self, num_samples: int) -> int:
        """Images per set for evaluate_samples: the cap, or the sample count in subsample mode."""
        return num_samples if self.reference == "subsample" else self.max_reference_images

    def identity_for(self, num_samples: int) -> dict:
        """What the scores of a set of ``num_samples`` images depend on besides the images: the marked fields, and
        the reference subset as the number of images per set."""
        return {**self.identity(FOLDED), "max_images": self.max_images(num_samples)}

    @field_validator("metrics", mode="before")
    @classmethod
    def _known_metrics(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if isinstance(names, (list, tuple)):
            if not names:
                raise ValueError(f"is empty; give at least one of {', '.join(METRICS)}")
            for name in names:
                if name not in METRICS:
                    raise ValueError(f"unknown metric {name!r}{did_you_mean(name, METRICS)}; "
                                     f"choose from {', '.join(METRICS)}")
            if len(set(names)) != len(names):
                raise ValueError(f"lists a metric twice: {names}")
            return list(names)
        return value
