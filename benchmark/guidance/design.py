"""The guidance design space as three axes: which negative, which combination rule, which schedule.

    cells = design_cells(negative=["cfg", "dog", "autoguidance", "icg"], rule=["linear", "apg", "cfg-zero-star"],
                         schedule=["constant", "interval"])
    cells[0].label     # 'cfg+linear@constant'
    cells[0].entry()   # {'name': 'cfg', 'label': 'cfg+linear@constant', 'params': {'rule': 'linear', ...}}
    cells[0].spec(w=2) # the MethodSpec of that cell at w = 2

A cell is a method entry like any other: the negative is the method (any guided method, or ``module:attribute``), the
rule and schedule its ``rule`` / ``schedule`` parameters, so a cell's grid (w, the rule's and the schedule's
parameters) is chosen on the selection seeds and its samples shared with a plain entry of the same spec.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

from benchmark.errors import ConfigError, did_you_mean
from benchmark.guidance.combine import ALIASES, LINEAR, RULES
from benchmark.guidance.method import RULE, SCHEDULE, MethodSpec, lookup_method, registered_methods
from benchmark.guidance.resolve import resolve_method
from benchmark.guidance.schedule import CONSTANT, SCHEDULES

NEGATIVES = ("cfg", "dog", "autoguidance", "icg")  # the built-in negatives; any guided method may be one
AXES = {"negative": NEGATIVES, "rule": RULES, "schedule": tuple(SCHEDULES)}


@dataclass(frozen=True)
class DesignCell:
    """One cell of a factorised design: ``negative`` (a guided method), ``rule`` (linear, apg, cfg-zero-star, fdg)
    and ``schedule`` (constant, interval, ramp-up, ramp-down)."""

    negative: str
    rule: str = LINEAR
    schedule: str = CONSTANT

    @property
    def label(self) -> str:
        """``dog+apg@interval``: the negative, + the rule, @ the schedule (safe in folder names)."""
        return f"{self.negative}+{self.rule}@{self.schedule}"

    @property
    def params(self) -> dict[str, Any]:
        return {RULE: self.rule, SCHEDULE: self.schedule}

    def axes(self) -> dict[str, str]:
        """``{"negative": ..., "rule": ..., "schedule": ...}``: the leaderboard's axis columns."""
        return {"negative": self.negative, "rule": self.rule, "schedule": self.schedule}

    def spec(self, values: dict | None = None, **more: Any) -> MethodSpec:
        """The cell's spec at ``values`` (w, the rule's and the schedule's parameters; defaults for the others)."""
        return resolve_method(self.negative, {**(values or {}), **more, **self.params})

    def entry(self) -> dict[str, Any]:
        """The cell as an experiment's ``methods:`` entry (name, label, params); add a ``grid`` to choose values."""
        return {"name": self.negative, "label": self.label, "params": dict(self.params)}


def _one(axis: str, value: Any) -> str:
    name = str(value).strip()
    if axis == "negative":
        if ":" not in name and name not in registered_methods():
            raise ConfigError(f"design: unknown negative {value!r}{did_you_mean(name, NEGATIVES)}; choose among "
                              f"{', '.join(NEGATIVES)}, another guided method or module:attribute")
        if not lookup_method(name)[0].guides:
            raise ConfigError(f"design: negative {name!r} has no guide; choose a guided method, e.g. "
                              f"{', '.join(NEGATIVES)}")
        return name
    name = ALIASES.get(name.lower(), name.lower()) if axis == "rule" else name.lower()
    if name not in AXES[axis]:
        raise ConfigError(f"design: unknown {axis} {value!r}{did_you_mean(name, AXES[axis])}; choose among "
                          f"{', '.join(AXES[axis])}")
    return name


def design_cell(negative: str, rule: str = LINEAR, schedule: str = CONSTANT) -> DesignCell:
    """One validated cell; an unknown axis value is a one-line ConfigError with did-you-mean."""
    cell = DesignCell(_one("negative", negative), _one("rule", rule), _one("schedule", schedule))
    cell.spec()  # the negative takes the rule and schedule at their defaults (one line naming the method if not)
    return cell


def design_cells(negative: Sequence[str] = NEGATIVES, rule: Sequence[str] = (LINEAR,),
                 schedule: Sequence[str] = (CONSTANT,)) -> list[DesignCell]:
    """Every cell of negative x rule x schedule, in that order (the negative varies slowest), validated. Each axis is
    a non-empty list without repeats, or one name."""
    lists = {}
    for axis, values in (("negative", negative), ("rule", rule), ("schedule", schedule)):
        values = [values] if isinstance(values, str) else list(values)
        if not values:
            raise ConfigError(f"design: {axis} is empty; give at least one of {', '.join(AXES[axis])}")
        names = [_one(axis, v) for v in values]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"design: {axis} names {twice[0]!r} twice; give each once")
        lists[axis] = names
    return [design_cell(n, r, s) for n, r, s in itertools.product(lists["negative"], lists["rule"], lists["schedule"])]
