"""Evaluation settings (``evaluation:`` in an experiment; the flags of ``dogbench evaluate``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from benchmark.errors import did_you_mean
from benchmark.metrics.registry import METRICS
from benchmark.settings import Count, Settings


class EvaluationSettings(Settings):
    """Metrics between generated samples and the target's real images."""

    metrics: list[str] = ["fid", "fd_dinov2"]
    """metrics to compute: fid, fd_dinov2, prdc (DINOv2), fd_effnet, prdc_effnet (offline EfficientNet-Lite0)"""
    ref_split: Literal["train", "test", "all"] = "all"
    """real images of the reference statistics"""
    batch_size: Count = 256
    """images per feature-network forward pass"""

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
