"""Guidance methods as plug-ins: a method is one small declaration, resolved and validated once into a spec.

A ``Method`` says

- the guide predictions it needs (``Guide``: which model - the fine-tuned model, the pre-trained source, or an extra
  checkpoint such as an earlier fine-tune step - and which label - that model's null label, the sample's class, or a
  random class other than the sample's),
- its parameters (``Param``: range, default, and for a guidance scale the value that makes it unguided),
- its combination rule, a pure tensor function ``rule(eps_cond, deltas, params) -> eps`` on the guided channels,
  where ``deltas[guide] = eps_cond - eps_guide`` (zero for a guide that is off because its scale is unguided). A rule
  may take a fourth argument, ``rule(eps_cond, deltas, params, at)``: ``at.t`` the model's timestep of the call and
  ``at.progress`` the fraction of sampling steps done (``Step``, steps.py).

``resolve_method(name_or_object, params)`` validates the parameters once and returns a ``MethodSpec``: the method with
every parameter's value, the combination rules that wrap it (``rule=apg|cfg-zero-star|fdg``, combine.py), its
schedule (``schedule=constant|interval|ramp-up|ramp-down``, schedule.py), and where the method came from (a registry
name, or ``module:attribute`` naming a ``Method`` or a factory returning one). Everything downstream - the denoiser,
the sample identity, the toy - reads the spec and trusts it.

Whether a spec guides at all is decided here, in ``MethodSpec.active_guides``: a guide whose scale parameter is at
its unguided value is off, and a spec with no guide on is the unguided prediction (sample identity ``none``).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from torch import Tensor

from benchmark.errors import ConfigError, did_you_mean, first_line
from benchmark.guidance.combine import APG, COMBINATIONS, Combination
from benchmark.guidance.param import Param, scale_param  # noqa: F401 - scale_param: the plug-in API's
from benchmark.guidance.scale import GuidanceInterval
from benchmark.guidance.schedule import CONSTANT, INTERVAL_SCHEDULE, SCHEDULES, T_HIGH, T_LOW, Schedule

FINETUNED, PRETRAINED = "finetuned", "pretrained"  # the two models every sampler knows; other names are checkpoints
RANDOM = "random"  # a guide label: per sample, a class other than its own, drawn from (seed, index) by the sampler
LABELS = ("null", "cond", RANDOM)

# rule(eps_cond, deltas, params[, at]) -> eps, all on the guided channels
Rule = Callable[..., Tensor]

# Keys every method with guides takes besides its own parameters: the guidance interval (LOW,HIGH timesteps; the
# interval schedule, kept as one key for experiments written before schedules), the combination rules and the
# schedule by name, and their parameters.
INTERVAL, RULE, SCHEDULE = "interval", "rule", "schedule"
RULE_PARAMS = {p.name: c for c in COMBINATIONS.values() for p in c.params}
SCHEDULE_PARAMS = {p.name: s for s in SCHEDULES.values() for p in s.params}
RESERVED = (INTERVAL, RULE, SCHEDULE, *RULE_PARAMS, *SCHEDULE_PARAMS)
APG_PARAMS = tuple(p.name for p in COMBINATIONS[APG].params)  # given to a method, they select APG (as they always did)


def positional_arguments(rule: Rule) -> float:
    """How many positional arguments ``rule`` takes: inf with ``*args``, 3 for a callable without a signature."""
    try:
        kinds = [p.kind for p in inspect.signature(rule).parameters.values()]
    except (TypeError, ValueError):
        return 3
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return math.inf
    return sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)


def takes_step(rule: Rule) -> bool:
    """Whether ``rule`` takes the fourth argument ``at``."""
    return positional_arguments(rule) >= 4


def calls_per_step(guides) -> int:
    """Model forwards per image of a step running ``guides``: the conditional one, and one per distinct (model,
    label) call besides it, as the denoiser batches them."""
    return 1 + len({(g.model, g.label) for g in guides} - {(FINETUNED, "cond")})


@dataclass(frozen=True)
class Guide:
    """One guide prediction: ``model`` (``finetuned``, ``pretrained`` or an extra checkpoint's name, e.g. ``weak``)
    called with ``label`` (``null``: that model's own null label; ``cond``: the sample's class; ``random``: a class
    other than the sample's, drawn per sample from (seed, index)). ``scale`` names the parameter whose unguided value
    turns this guide off (no forward pass); None: the guide is always on."""

    name: str
    model: str
    label: str = "null"
    scale: Optional[str] = "w"


@dataclass(frozen=True)
class Method:
    """A guidance method: its guides, its parameters and its combination rule (see the module docstring)."""

    name: str
    rule: Rule
    guides: tuple[Guide, ...] = ()
    params: tuple[Param, ...] = ()
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "guides", tuple(self.guides))
        object.__setattr__(self, "params", tuple(self.params))
        where = f"guidance method {self.name!r}"
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name) or ":" in self.name:
            raise ValueError(f"guidance method name {self.name!r} must be a non-empty word without spaces or ':'")
        if not callable(self.rule) or positional_arguments(self.rule) < 3:
            raise ValueError(f"{where}: rule must be a function rule(eps_cond, deltas, params) -> eps, or "
                             f"rule(eps_cond, deltas, params, at) to see the step")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names) or set(RESERVED) & set(names):
            raise ValueError(f"{where}: parameter names must be unique and not one of {', '.join(sorted(RESERVED))} "
                             f"(every guided method has those), got {names}")
        for p in self.params:
            if not (p.low <= p.default <= p.high) or (p.unguided is not None and not p.low <= p.unguided <= p.high):
                raise ValueError(f"{where}: parameter {p.name}'s default {p.default} and unguided value {p.unguided} "
                                 f"must lie in [{p.low}, {p.high}]")
        guide_names = [g.name for g in self.guides]
        if len(set(guide_names)) != len(guide_names):
            raise ValueError(f"{where}: guide names must be unique, got {guide_names}")
        for g in self.guides:
            if g.label not in LABELS:
                raise ValueError(f"{where}: guide {g.name!r} has label {g.label!r}; use 'null', 'cond' or 'random'")
            if g.scale is not None and g.scale not in names:
                raise ValueError(f"{where}: guide {g.name!r} is scaled by {g.scale!r}, which is not one of its "
                                 f"parameters ({', '.join(names) or 'none'})")
            if not isinstance(g.model, str) or not g.model or ":" in g.model or "=" in g.model:
                raise ValueError(f"{where}: guide {g.name!r} names model {g.model!r}; use 'finetuned', 'pretrained' "
                                 f"or a checkpoint name such as 'weak'")

    @property
    def step_aware(self) -> bool:
        """The rule takes ``at`` (the step) as its fourth argument."""
        return takes_step(self.rule)

    def calls_per_step(self) -> int:
        """Forwards per image of a step with every guide on (a batch-2B call of one model counts 2)."""
        return calls_per_step(self.guides)


@dataclass(frozen=True)
class MethodSpec:
    """A method with every parameter's value, its combination rules and schedule: what the denoiser runs and what
    the sample identity records."""

    method: Method
    params: Mapping[str, float] = field(default_factory=dict)
    interval: Optional[GuidanceInterval] = None  # the interval schedule's [t_low, t_high]; None for other schedules
    source: str = ""  # how it was named (registry name or module:attribute); empty for an object passed directly
    rules: tuple[str, ...] = ()  # combination rules wrapping the method, applied in this order (each one on)
    schedule: str = CONSTANT

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def active_guides(self) -> tuple[Guide, ...]:
        """The guides that are on: those without a scale, or whose scale is not at its unguided value."""
        unguided = {p.name: p.unguided for p in self.method.params}
        return tuple(g for g in self.method.guides if g.scale is None or self.params[g.scale] != unguided[g.scale])

    @property
    def guided(self) -> bool:
        """False: the spec is the fine-tuned model's conditional prediction, exactly, with no guide forward."""
        return bool(self.active_guides)

    @property
    def combinations(self) -> tuple[Combination, ...]:
        return tuple(COMBINATIONS[name] for name in self.rules)

    @property
    def schedule_def(self) -> Schedule:
        return SCHEDULES[self.schedule]

    @property
    def projected(self) -> bool:
        """APG is on (a parallel weight below 1 or a norm cap), for a guided spec."""
        return self.guided and APG in self.rules

    @property
    def zero_steps(self) -> int:
        """First sampling steps that return the zero-velocity prediction (CFG-Zero*'s zero-init), for a guided spec."""
        return max([c.zero_steps(self.params) for c in self.combinations], default=0) if self.guided else 0

    def needs_noise_schedule(self) -> bool:
        return self.guided and any(c.needs_noise_schedule(self.params) for c in self.combinations)

    def needs_random_labels(self) -> bool:
        return any(g.label == RANDOM for g in self.active_guides)

    def models(self) -> tuple[str, ...]:
        """The models a sampler must load for this spec: ``finetuned`` first, then each guide's model."""
        needed = [FINETUNED]
        for g in self.active_guides:
            if g.model not in needed:
                needed.append(g.model)
        return tuple(needed)

    def calls_per_step(self) -> int:
        """Forwards per image of a step where the guides run (1 for an unguided spec)."""
        return calls_per_step(self.active_guides)

    def _own_names(self) -> set:
        return {p.name for p in self.method.params}

    def _named_rules(self) -> tuple[str, ...]:
        """The rules a spec names: none when APG alone (it is told by its parameters, as before rules had names)."""
        return () if self.rules in ((), (APG,)) else self.rules

    def _schedule_shown(self) -> bool:
        return self.schedule not in (CONSTANT, INTERVAL_SCHEDULE)

    def _identity_params(self) -> dict:
        """Every parameter but w that changes the images, in declaration order: the method's own, APG's (when on),
        the other rules' and a ramp's. The interval is the sample identity's own key."""
        keep = self._own_names() | {p.name for c in self.combinations for p in c.params}
        if self._schedule_shown():
            keep |= {p.name for p in self.schedule_def.params}
        return {k: v for k, v in self.params.items() if k != "w" and k in keep}

    def identity(self) -> dict:
        """The method's part of a sample set's identity. An unguided spec is ``{"method": "none", "w": 1.0}`` whatever
        the method; otherwise the name and ``w`` (None for a method without one), plus ``params`` with every other
        parameter that changes the images (APG's only when on), ``rule`` for combination rules other than APG alone,
        ``schedule`` for a ramp, and ``method_source`` for a user's method (with ``code_sha256``, the hash of its code)."""
        if not self.guided:
            return {"method": "none", "w": 1.0}
        out: dict[str, Any] = {"method": self.name, "w": self.params.get("w")}
        other = self._identity_params()
        if other:
            out["params"] = other
        if self._named_rules():
            out["rule"] = "+".join(self.rules)
        if self._schedule_shown():
            out["schedule"] = self.schedule
        if self.source and self.source != self.name:
            out["method_source"] = self.source
            if ":" in self.source:  # a user's module: an edited rule is another method
                out["code_sha256"] = plugin_code_sha256(self.source)
        return out

    def _shown(self, with_interval: bool) -> dict:
        if not self.guided:
            return {}
        apg_off = COMBINATIONS[APG].off
        shown = {}
        for k, v in self.params.items():
            if k in apg_off:
                if v != apg_off[k]:
                    shown[k] = v
            elif k in (T_LOW, T_HIGH):
                if with_interval:
                    shown[k] = v
            else:
                shown[k] = v
        return shown

    def shown_params(self) -> dict:
        """The numbers that tell specs apart in tables: the method's own, APG's where not off, the other rules', and
        the schedule's (the interval's t_low and t_high too)."""
        return self._shown(with_interval=True)

    def describe(self) -> str:
        """``dog w=2``, ``cfg+dog w_cfg=1.5 w_dog=1.5``, ``dog w=2 eta=0``, ``none``,
        ``dog w=2 rule=fdg high_ratio=2 schedule=ramp-up ramp_up_start=0``: for tables and messages."""
        if not self.guided:
            return "none"
        shown = self._shown(with_interval=False)
        words = [self.name] + [f"{k}={v:g}" for k, v in shown.items() if k in self._own_names()]
        if self._named_rules():
            words.append(f"{RULE}={'+'.join(self.rules)}")
        words += [f"{k}={v:g}" for k, v in shown.items() if k in RULE_PARAMS]
        if self._schedule_shown():
            words.append(f"{SCHEDULE}={self.schedule}")
        words += [f"{k}={v:g}" for k, v in shown.items() if k in SCHEDULE_PARAMS]
        return " ".join(words) + (f" interval={self.interval.low:g},{self.interval.high:g}" if self.interval else "")

    def slug(self) -> str:
        """A folder-name label: ``dog-w2`` and ``none-w1`` (the harness's names), ``cfg+dog-w_cfg2-w_dog1.5``,
        ``dog-w2-eta0``, ``dog-w2-fdg-high_ratio2-ramp-up-ramp_up_start0``; a user's method by its name. The interval
        is left to the caller's config hash."""
        if not self.guided:
            return "none-w1"
        shown = self._shown(with_interval=False)
        parts = [self.name] + [f"{k}{v:g}" for k, v in shown.items() if k in self._own_names() or k in APG_PARAMS]
        parts += list(self._named_rules()) + [f"{k}{v:g}" for k, v in shown.items()
                                              if k in RULE_PARAMS and k not in APG_PARAMS]
        if self._schedule_shown():
            parts += [self.schedule] + [f"{k}{v:g}" for k, v in shown.items() if k in SCHEDULE_PARAMS]
        return "-".join(parts)

    def to_dict(self) -> dict:
        """``{"method": ..., "params": {...}}``; ``resolve_method(**spec.to_dict())`` gives the spec back."""
        params: dict[str, Any] = {k: v for k, v in self.params.items() if k not in (T_LOW, T_HIGH)}
        if self.rules:
            params[RULE] = "+".join(self.rules)
        if self.schedule not in (CONSTANT, INTERVAL_SCHEDULE):
            params[SCHEDULE] = self.schedule
        if self.method.guides:
            params[INTERVAL] = None if self.interval is None else [self.interval.low, self.interval.high]
        return {"method": self.source or self.name, "params": params}


# ---------------------------------------------------------------------------------------------------------------
# The registry and resolution


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry under its name (a built-in's name cannot be taken twice)."""
    if not isinstance(method, Method):
        raise ValueError(f"register_method needs a benchmark.guidance.Method, got {type(method).__name__}")
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method:
        raise ValueError(f"guidance method name {method.name!r} is taken; give yours another name")
    _REGISTRY[method.name] = method
    return method


def registered_methods() -> dict[str, Method]:
    """Name -> method, in registration order (the built-ins first)."""
    return dict(_REGISTRY)


_CODE_SHA256: dict[str, tuple[Any, str]] = {}  # module:attribute -> (the object loaded, the hash of its code)


def _code_sha256(module, method: Method) -> str:
    """sha256 of the code behind a user's method: the files of the module it is named in and of the module defining
    its rule (the rule's source where a module has no file)."""
    digest = hashlib.sha256()
    for mod in dict.fromkeys([module, sys.modules.get(getattr(method.rule, "__module__", ""), None)]):
        path = getattr(mod, "__file__", None)
        if path and os.path.isfile(path):
            digest.update(Path(path).read_bytes())
        else:
            try:
                digest.update(inspect.getsource(method.rule).encode())
            except (OSError, TypeError):
                digest.update(repr(method).encode())
    return digest.hexdigest()


def plugin_code_sha256(reference: str) -> str:
    """The hash of the code of the user's method ``module:attribute`` as this process loaded it."""
    if reference not in _CODE_SHA256:
        _load_reference(reference)
    return _CODE_SHA256[reference][1]


def _load_reference(reference: str) -> Method:
    """The Method that ``module:attribute`` names: the object itself, or what a factory returns when called."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"guidance method {reference!r}: write a user's method as module:attribute, "
                          f"e.g. mypkg.rules:my_rule")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's to fix, in one line
        raise ConfigError(f"guidance method {reference!r}: module {module_name!r} does not import ({first_line(e)}); "
                          f"put it on PYTHONPATH or fix the error") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(f"guidance method {reference!r}: {module_name} has no attribute {attribute!r}"
                              f"{did_you_mean(part, names)}")
        obj = getattr(obj, part)
    if not isinstance(obj, Method) and callable(obj):  # a factory
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - a broken factory is the user's to fix, in one line
            raise ConfigError(f"guidance method {reference!r}: calling it failed ({first_line(e)}); a factory must "
                              f"take no arguments and return a benchmark.guidance.Method") from None
    if not isinstance(obj, Method):
        raise ConfigError(f"guidance method {reference!r} is a {type(obj).__name__}, not a benchmark.guidance.Method "
                          f"(or a factory returning one)")
    builtin = _REGISTRY.get(obj.name)
    if builtin is not None and builtin is not obj:
        raise ConfigError(f"guidance method {reference!r} is named {obj.name!r}, a built-in's name; give it another")
    if _CODE_SHA256.get(reference, (None,))[0] is not obj:  # the code as loaded (a reloaded module: hashed again)
        _CODE_SHA256[reference] = (obj, _code_sha256(module, obj))
    return obj


def lookup_method(method: str | Method) -> tuple[Method, str]:
    """(method, source) for a registry name, ``module:attribute`` or a Method object."""
    if isinstance(method, Method):
        registered = _REGISTRY.get(method.name)
        if registered is not None and registered is not method:
            raise ConfigError(f"guidance method {method.name!r} is a registered method's name, for another "
                              f"declaration; give yours another name")
        return method, ""
    if not isinstance(method, str) or not method.strip():
        raise ConfigError(f"guidance method {method!r} must be a name ({', '.join(_REGISTRY)}) or module:attribute")
    method = method.strip()
    if ":" in method:
        return _load_reference(method), method
    if method not in _REGISTRY:
        raise ConfigError(f"unknown guidance method {method!r}{did_you_mean(method, _REGISTRY)}; choose one of "
                          f"{', '.join(_REGISTRY)}, or module:attribute for your own")
    return _REGISTRY[method], method
