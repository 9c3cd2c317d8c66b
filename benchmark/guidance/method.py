"""Guidance methods as plug-ins: a method is one small declaration, resolved and validated once into a spec.

A ``Method`` says

- the guide predictions it needs (``Guide``: which model - the fine-tuned model, the pre-trained source, or an extra
  checkpoint such as an earlier fine-tune step - and which label - that model's null label or the sample's class),
- its parameters (``Param``: range, default, and for a guidance scale the value that makes it unguided),
- its combination rule, a pure tensor function ``rule(eps_cond, deltas, params) -> eps`` on the guided channels,
  where ``deltas[guide] = eps_cond - eps_guide`` (zero for a guide that is off because its scale is unguided).

``resolve_method(name_or_object, params)`` validates the parameters once and returns a ``MethodSpec``: the method with
every parameter's value, the guidance interval, and where the method came from (a registry name, or
``module:attribute`` naming a ``Method`` or a factory returning one). Everything downstream - the denoiser, the
sample identity, the toy - reads the spec and trusts it.

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
from benchmark.guidance.projection import ETA, ETA_OFF, NORM_OFF, NORM_THRESHOLD, is_projected
from benchmark.guidance.scale import W_DECIMALS, W_MAX, W_MIN, GuidanceInterval

FINETUNED, PRETRAINED = "finetuned", "pretrained"  # the two models every sampler knows; other names are checkpoints
LABELS = ("null", "cond")

# rule(eps_cond, deltas, params) -> eps, all on the guided channels
Rule = Callable[[Tensor, Mapping[str, Tensor], Mapping[str, float]], Tensor]


@dataclass(frozen=True)
class Guide:
    """One guide prediction: ``model`` (``finetuned``, ``pretrained`` or an extra checkpoint's name, e.g. ``weak``)
    called with ``label`` (``null``: that model's own null label; ``cond``: the sample's class). ``scale`` names the
    parameter whose unguided value turns this guide off (no forward pass); None: the guide is always on."""

    name: str
    model: str
    label: str = "null"
    scale: Optional[str] = "w"


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


def scale_param(name: str = "w", doc: str = "guidance scale; 1 = unguided") -> Param:
    """A guidance scale: [0, 20], default 1.5 (the command line's), unguided at 1, rounded to 4 decimals."""
    return Param(name, W_MIN, W_MAX, default=1.5, unguided=1.0, doc=doc, decimals=W_DECIMALS)


# Parameters every method with guides takes, applied by the denoiser (not by the rule): the guidance interval (a pair
# of timesteps, GuidanceInterval) and APG's two numbers (benchmark.guidance.projection), off by default.
INTERVAL = "interval"
PROJECTION_PARAMS = (
    Param(ETA, 0.0, 1.0, default=ETA_OFF, doc="APG: weight of the update's component parallel to the conditional "
                                               "denoised prediction (1 = the plain rule, 0 = removed)"),
    Param(NORM_THRESHOLD, 0.0, 1e4, default=NORM_OFF, doc="APG: the largest norm of the update (x0 units, per "
                                                           "sample, over the guided channels); 0 = no cap"),
)


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
        if not callable(self.rule):
            raise ValueError(f"{where}: rule must be a function rule(eps_cond, deltas, params) -> eps")
        names = [p.name for p in self.params]
        reserved = {INTERVAL, *(p.name for p in PROJECTION_PARAMS)}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ValueError(f"{where}: parameter names must be unique and not one of {', '.join(sorted(reserved))} "
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
                raise ValueError(f"{where}: guide {g.name!r} has label {g.label!r}; use 'null' or 'cond'")
            if g.scale is not None and g.scale not in names:
                raise ValueError(f"{where}: guide {g.name!r} is scaled by {g.scale!r}, which is not one of its "
                                 f"parameters ({', '.join(names) or 'none'})")
            if not isinstance(g.model, str) or not g.model or ":" in g.model or "=" in g.model:
                raise ValueError(f"{where}: guide {g.name!r} names model {g.model!r}; use 'finetuned', 'pretrained' "
                                 f"or a checkpoint name such as 'weak'")

    def all_params(self) -> tuple[Param, ...]:
        """Its own parameters, then APG's for a method with guides."""
        return self.params + (PROJECTION_PARAMS if self.guides else ())


@dataclass(frozen=True)
class MethodSpec:
    """A method with every parameter's value: what the denoiser runs and what the sample identity records."""

    method: Method
    params: Mapping[str, float] = field(default_factory=dict)
    interval: Optional[GuidanceInterval] = None
    source: str = ""  # how it was named (registry name or module:attribute); empty for an object passed directly

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
    def projected(self) -> bool:
        """APG is on (a parallel weight below 1 or a norm cap), for a guided spec."""
        return self.guided and is_projected(self.params)

    def models(self) -> tuple[str, ...]:
        """The models a sampler must load for this spec: ``finetuned`` first, then each guide's model."""
        needed = [FINETUNED]
        for g in self.active_guides:
            if g.model not in needed:
                needed.append(g.model)
        return tuple(needed)

    def identity(self) -> dict:
        """The method's part of a sample set's identity. An unguided spec is ``{"method": "none", "w": 1.0}`` whatever
        the method; otherwise the name and ``w`` (None for a method without one), plus ``params`` with every other
        parameter that changes the images (APG's only when on), plus ``method_source`` for a user's method."""
        if not self.guided:
            return {"method": "none", "w": 1.0}
        out: dict[str, Any] = {"method": self.name, "w": self.params.get("w")}
        other = {k: v for k, v in self.params.items() if k != "w" and (self.projected or k in self._own_names())}
        if other:
            out["params"] = other
        if self.source and self.source != self.name:
            out["method_source"] = self.source
            if ":" in self.source:  # a user's module: an edited rule is another method
                out["code_sha256"] = plugin_code_sha256(self.source)
        return out

    def _own_names(self) -> set:
        return {p.name for p in self.method.params}

    def shown_params(self) -> dict:
        """The parameters that tell specs apart in tables: the method's own, and APG's where not at their defaults."""
        if not self.guided:
            return {}
        defaults = {p.name: p.default for p in self.method.all_params()}
        return {k: v for k, v in self.params.items() if k in self._own_names() or v != defaults[k]}

    def describe(self) -> str:
        """``dog w=2``, ``cfg+dog w_cfg=1.5 w_dog=1.5``, ``dog w=2 eta=0``, ``none``: for tables and messages."""
        if not self.guided:
            return "none"
        text = " ".join([self.name] + [f"{k}={v:g}" for k, v in self.shown_params().items()])
        return text + (f" interval={self.interval.low:g},{self.interval.high:g}" if self.interval else "")

    def slug(self) -> str:
        """A folder-name label: ``dog-w2`` and ``none-w1`` (the harness's names), ``cfg+dog-w_cfg2-w_dog1.5``,
        ``dog-w2-eta0``; a user's method by its name. The interval is left to the caller's config hash."""
        if not self.guided:
            return "none-w1"
        return "-".join([self.name] + [f"{k}{v:g}" for k, v in self.shown_params().items()])

    def to_dict(self) -> dict:
        """``{"method": ..., "params": {...}}``; ``resolve_method(**spec.to_dict())`` gives the spec back."""
        params: dict[str, Any] = dict(self.params)
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


def resolve_method(method: str | Method | MethodSpec, params: Optional[Mapping[str, Any]] = None,
                   **more: Any) -> MethodSpec:
    """The validated spec of ``method`` (a name, ``module:attribute``, a Method, or a spec to re-parameterise) with
    ``params`` (and keyword parameters) over its defaults; values may be text, as typed on a command line. Every
    mistake is one ConfigError line: an unknown method or parameter (with did-you-mean), a value out of range, an
    interval that is not LOW,HIGH."""
    given = dict(params or {})
    given.update(more)
    if isinstance(method, MethodSpec):
        base, source = method.method, method.source
        given = {**method.to_dict()["params"], **given}
    else:
        base, source = lookup_method(method)
    where = f"method {source or base.name}"
    declared = {p.name: p for p in base.all_params()}
    allowed = list(declared) + ([INTERVAL] if base.guides else [])
    for key in given:
        if key not in allowed:
            choices = ", ".join(allowed) if allowed else "no parameters"
            raise ConfigError(f"{where} has no parameter {key!r}{did_you_mean(key, allowed)}; it takes {choices}")
    values = {name: p.check(given[name], where) if name in given else p.default for name, p in declared.items()}
    try:
        interval = GuidanceInterval.parse(given.get(INTERVAL))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return MethodSpec(base, values, interval, source)
