"""The guidance methods an experiment compares, each with the parameter values it is selected from.

    methods:
      - none                                     # fine-tune only
      - cfg                                      # w from the experiment's w_grid
      - dog
      - {name: cfg+dog, grid: {w_cfg: [1.0, 1.5], w_dog: [1.0, 1.5, 2.0]}}
      - {name: dog, label: dog-apg, params: {eta: 0.0}}
      - {name: autoguidance, guides: {weak: {step: 300}}}   # the fine-tune's own EMA at step 300 guides
      - {name: mypkg.rules:my_rule, grid: {w: [1.5, 2.0]}}  # a user's method

An entry names a method of the guidance registry (``benchmark.guidance``) or ``module:attribute``; ``params`` fixes
parameters, ``grid`` lists the values of parameters to choose from on the selection seeds (default: the experiment's
``w_grid`` for a method with a scale ``w``), ``guides`` says where an extra guide model comes from. Every grid point
is validated when the experiment is loaded. A grid point at which no guide is on (every scale unguided, e.g. w = 1)
is the fine-tune-only sample set, named ``none``, whichever entry it belongs to.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, Discriminator, Tag, field_validator, model_validator

from benchmark.errors import ConfigError
from benchmark.guidance import FINETUNED, PRETRAINED, MethodSpec, lookup_method
from benchmark.guidance.combine import LINEAR
from benchmark.guidance.design import DesignCell, design_cells
from benchmark.guidance.schedule import CONSTANT
from benchmark.sampling.point import method_spec
from benchmark.settings import Count, Settings, non_empty

UNGUIDED = "none"


class GuideSource(Settings):
    """Where an extra guide model of a method comes from: an EMA snapshot of this fine-tune, or a file."""

    step: Optional[Count] = None
    """the fine-tune's EMA at this optimizer step (kept during fine-tuning)"""
    path: Optional[str] = None
    """a DiT checkpoint (relative to the experiment file)"""

    @model_validator(mode="after")
    def _one(self):
        if (self.step is None) == (self.path is None):
            raise ValueError("give exactly one of step (an EMA snapshot of the fine-tune) or path (a checkpoint)")
        return self


class MethodEntry(Settings):
    """One method of the comparison (see the module docstring)."""

    name: str
    """a registered guidance method (none, cfg, dog, cfg+dog, autoguidance) or module:attribute"""
    label: Optional[str] = None
    """the name in tables and folders (default: name); entries need distinct labels"""
    params: dict[str, Any] = {}
    """fixed parameter values, e.g. {eta: 0.0}"""
    grid: dict[str, Annotated[list, non_empty("[1.5, 2.0]")]] = {}
    """parameter -> values chosen from on the selection seeds (default: w over the experiment's w_grid)"""
    guides: dict[str, GuideSource] = {}
    """extra guide models by the name the method's guide uses (autoguidance: weak)"""

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        lookup_method(value)  # unknown name, or a module:attribute that does not import: one line now
        return value

    @property
    def key(self) -> str:
        return self.label or self.name

    def method(self):
        return lookup_method(self.name)[0]

    def spec(self, values: Optional[dict] = None, interval: Optional[list] = None) -> MethodSpec:
        """The resolved spec of this entry at ``values`` (a grid point, a fixed w, a sweep trial) under the
        experiment's guidance ``interval``: its own ``params`` are kept (its own interval among them)."""
        return method_spec(self.name, self.params, values, interval)


# validated in the form the user wrote (as the experiment's datasets), so an error names the problem of that form
MethodList = list[Annotated[Union[Annotated[str, AfterValidator(MethodEntry._known), Tag("[name]")],
                                  Annotated[MethodEntry, Tag("{entry}")]],
                            Discriminator(lambda v: "{entry}" if isinstance(v, (dict, MethodEntry)) else "[name]")]]


class Design(Settings):
    """The axes of a factorised design; each a list (or one name)."""

    negative: list[str]
    """the negatives: cfg (the fine-tune's null label), dog (the pre-trained model's), autoguidance, icg (a random
    class), another guided method or module:attribute"""
    rule: list[str] = [LINEAR]
    """how the negative is combined: linear, apg, cfg-zero-star, fdg"""
    schedule: list[str] = [CONSTANT]
    """when it guides: constant, interval, ramp-up, ramp-down"""
    grid: dict[str, list] = {}
    """parameter -> values every cell is chosen from on the selection seeds (default: w over the experiment's
    w_grid)"""

    @field_validator("negative", "rule", "schedule", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cells(self):
        self.cells()  # an unknown or repeated axis value, an empty axis: one line now
        return self

    def cells(self) -> list[DesignCell]:
        return design_cells(self.negative, self.rule, self.schedule)

    def entries(self) -> list["MethodEntry"]:
        """The cells as ``methods:`` entries."""
        return [MethodEntry(**cell.entry(), grid=dict(self.grid)) for cell in self.cells()]


def entries(methods: MethodList) -> list[MethodEntry]:
    return [MethodEntry(name=m) if isinstance(m, str) else m for m in methods]


def has_scale_w(entry: MethodEntry) -> bool:
    return any(p.name == "w" for p in entry.method().params)


def grid_points(entry: MethodEntry, w_values: list[float], interval: Optional[list]) -> list[MethodSpec]:
    """Every spec of ``entry``'s grid (fixed params over each combination of grid values), validated."""
    grid = dict(entry.grid)
    if not grid and has_scale_w(entry) and "w" not in entry.params:
        grid = {"w": w_values}
    names = list(grid)
    points = []
    for values in itertools.product(*(grid[n] for n in names)) if names else [()]:
        spec = entry.spec(dict(zip(names, values)), interval)
        if spec not in points:
            points.append(spec)
    return points


def params_text(spec: MethodSpec) -> str:
    """The parameters that tell a method's sample sets apart, besides w: '' for none, cfg and dog at a w."""
    if not spec.guided:
        return ""
    return " ".join(f"{k}={v:g}" for k, v in spec.shown_params().items() if k != "w")


def spec_w(spec: MethodSpec) -> float:
    """The w column of a sample set: 1 unguided, the scale w, or NaN for a method without one."""
    if not spec.guided:
        return 1.0
    return float(spec.params["w"]) if "w" in spec.params else math.nan


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One sample set: dataset x method entry (its label) x resolved parameters x sampling seed."""

    dataset: str
    method: str            # the entry's label, or "none" for an unguided set
    spec: MethodSpec
    seed: int

    @property
    def w(self) -> float:
        return spec_w(self.spec)

    @property
    def params(self) -> str:
        return params_text(self.spec)

    def key(self) -> tuple:
        return (self.dataset, self.method, self.w if not math.isnan(self.w) else None, self.params, self.seed)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunSpec) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())


def run_spec(dataset: str, label: str, spec: MethodSpec, seed: int) -> RunSpec:
    """The sample set of ``spec`` under ``label``, the unguided one under ``none``."""
    return RunSpec(dataset, label if spec.guided else UNGUIDED, spec, seed)


def needed_models(entry: MethodEntry) -> set[str]:
    return {g.model for g in entry.method().guides}


def check_entries(methods: list[MethodEntry], finetune_steps: int) -> None:
    """Distinct labels; every extra guide model has a source; snapshot steps within the fine-tune."""
    labels = [e.key for e in methods]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"methods: {twice} named twice; give entries distinct labels (label: ...)")
    for e in methods:
        for model in sorted(needed_models(e) - {FINETUNED, PRETRAINED}):
            source = e.guides.get(model)
            if source is None:
                raise ConfigError(f"method {e.key}: its guide model {model!r} has no source; add guides: "
                                  f"{{{model}: {{step: N}}}} (an EMA snapshot of the fine-tune) or {{path: CKPT}}")
            if source.step is not None and source.step >= finetune_steps:
                raise ConfigError(f"method {e.key}: guide {model} at step {source.step} is not earlier than the "
                                  f"fine-tune's {finetune_steps} steps; pick an earlier step")
        unknown = sorted(set(e.guides) - needed_models(e))
        if unknown:
            raise ConfigError(f"method {e.key}: guides {unknown} are not models its guides use "
                              f"({', '.join(sorted(needed_models(e))) or 'none'})")


def snapshot_steps(methods: list[MethodEntry]) -> list[int]:
    """The fine-tune EMA snapshots the methods need."""
    return sorted({s.step for e in methods for s in e.guides.values() if s.step is not None})
