"""The guidance scale w, the guidance interval, and the extrapolation every built-in rule is made of.

CFG and DoG both extrapolate the fine-tuned conditional prediction away from a "guide" prediction:

    eps = eps_ft(x|c) + (w - 1) * (eps_ft(x|c) - eps_guide(x))

CFG's guide is the fine-tuned model with its own null label K; DoG's guide is the frozen pre-trained model with
*its* null label (1000 for ImageNet). w = 1 is the unguided conditional prediction.

As in the DiT reference code, only the first ``guided_channels`` (3 of the 4 latent eps channels) are guided;
the remaining eps channel and the learned-variance channels come from the conditional branch. ``None`` guides
every eps channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Optional, Sequence

import torch
from pydantic import BeforeValidator
from torch import Tensor

W_MIN, W_MAX = 0.0, 20.0
W_DECIMALS = 4  # w is rounded to this many decimals, so 1.0 + 3 * 0.1 is exactly 1.3 everywhere
DEFAULT_GUIDED_CHANNELS = 3  # the DiT reference's choice: paper numbers are comparable only with it


def check_guidance_scale(w: float) -> float:
    """Return ``w`` as float, or raise a one-line ValueError naming the allowed range."""
    try:
        w = float(w)
    except (TypeError, ValueError):
        raise ValueError(f"guidance scale w={w!r} is not a number; pass a value in [{W_MIN}, {W_MAX}], e.g. --w 1.5") from None
    if not math.isfinite(w) or not (W_MIN <= w <= W_MAX):
        raise ValueError(f"guidance scale w={w} is outside [{W_MIN}, {W_MAX}]; pass e.g. --w 1.5 (w=1 is unguided)")
    return w


def _scale(value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"guidance scale w={value!r} is not a number; use a value in [{W_MIN}, {W_MAX}], e.g. 1.5")
    return round(check_guidance_scale(value), W_DECIMALS)


# A validated, rounded guidance scale: the type of every w a user gives (experiment grids, --w). It is checked
# there, once; the arithmetic below trusts it.
GuidanceScale = Annotated[float, BeforeValidator(_scale)]


def guide(eps_cond: Tensor, eps_guide: Tensor, w: float, guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS) -> Tensor:
    """eps_cond + (w - 1) * (eps_cond - eps_guide) on the first ``guided_channels`` channels (dim 1).

    Channels past ``guided_channels`` (and any channels ``eps_guide`` lacks, such as learned variance)
    are taken from ``eps_cond`` unchanged.
    """
    if w == 1.0:
        return eps_cond
    n = eps_guide.shape[1] if guided_channels is None else min(guided_channels, eps_guide.shape[1])
    guided = eps_cond[:, :n] + (w - 1.0) * (eps_cond[:, :n] - eps_guide[:, :n])
    return torch.cat([guided, eps_cond[:, n:]], dim=1)


def cfg(eps_cond: Tensor, eps_uncond: Tensor, w: float, guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS) -> Tensor:
    """Classifier-free guidance: the guide is the fine-tuned model's own unconditional prediction."""
    return guide(eps_cond, eps_uncond, w, guided_channels)


def dog(eps_cond: Tensor, eps_pretrained_uncond: Tensor, w: float, guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS) -> Tensor:
    """Domain guidance: the guide is the frozen pre-trained model's unconditional prediction."""
    return guide(eps_cond, eps_pretrained_uncond, w, guided_channels)


@dataclass(frozen=True)
class GuidanceInterval:
    """Guide only where ``low <= t <= high`` (t on the training timescale, 0..T-1); elsewhere use the
    conditional prediction and skip the guide's forward pass."""

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and 0 <= self.low <= self.high):
            raise ValueError(f"guidance interval [{self.low}, {self.high}] is empty or negative; pass LOW,HIGH with 0 <= LOW <= HIGH")

    @classmethod
    def parse(cls, text: Optional[str | Sequence[float]]) -> Optional["GuidanceInterval"]:
        """From ``"LOW,HIGH"`` or ``[low, high]``; None / "" / "none" mean no interval."""
        if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "null")):
            return None
        parts = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else [text]
        try:
            low, high = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise ValueError(f"guidance interval {text!r} must be two numbers LOW,HIGH (timesteps 0..999), "
                             f"e.g. 0,700") from None
        return cls(low, high)

    def mask(self, t: Tensor) -> Tensor:
        return (t >= self.low) & (t <= self.high)
