"""A number a guidance method, a combination rule or a schedule takes: its range, its default, and for a guidance
scale the value that makes it unguided. Values are checked once (``Param.check``), with one-line errors."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from benchmark.errors import ConfigError
from benchmark.guidance.scale import W_DECIMALS, W_MAX, W_MIN


@dataclass(frozen=True)
class Param:
    """A number a method takes: its range, its default, and (for a guidance scale) the value that makes the guides
    it scales contribute nothing. ``decimals`` rounds values (guidance scales: 4), so grids compare exactly."""

    name: str
    low: float
    high: float
    default: float
    unguided: Optional[float] = None
    doc: str = ""
    decimals: Optional[int] = None

    def check(self, value: Any, where: str) -> float:
        """The value as a float in range, or a one-line ConfigError naming the fix."""
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {self.name}={value!r} is not a number; pass a value in "
                              f"[{self.low:g}, {self.high:g}], e.g. {self.name}={self.default:g}") from None
        if not math.isfinite(number) or not (self.low <= number <= self.high):
            hint = f" ({self.name}={self.unguided:g} is unguided)" if self.unguided is not None else ""
            raise ConfigError(f"{where}: {self.name}={value} is outside [{self.low:g}, {self.high:g}]; pass a value "
                              f"in range, e.g. {self.name}={self.default:g}{hint}")
        return round(number, self.decimals) if self.decimals is not None else number

    def range_text(self) -> str:
        """``[0, 20] default 1.5 unguided 1``: for listings."""
        text = f"[{self.low:g}, {self.high:g}] default {self.default:g}"
        return text + (f" unguided {self.unguided:g}" if self.unguided is not None else "")


def scale_param(name: str = "w", doc: str = "guidance scale; 1 = unguided") -> Param:
    """A guidance scale: [0, 20], default 1.5 (the command line's), unguided at 1, rounded to 4 decimals."""
    return Param(name, W_MIN, W_MAX, default=1.5, unguided=1.0, doc=doc, decimals=W_DECIMALS)
