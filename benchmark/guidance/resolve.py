"""Resolving a method and its parameters into a validated ``MethodSpec``: the one place where text from experiments
and command lines (``w=1.5``, ``rule=cfg-zero-star``, ``schedule=ramp-up``, ``interval=0,700``) becomes a spec."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from benchmark.errors import ConfigError, did_you_mean
from benchmark.guidance.combine import ALIASES, APG, COMBINATIONS, LINEAR, RULES
from benchmark.guidance.method import (APG_PARAMS, INTERVAL, RESERVED, RULE, RULE_PARAMS, SCHEDULE, SCHEDULE_PARAMS,
                                       Method, MethodSpec, lookup_method)
from benchmark.guidance.scale import GuidanceInterval
from benchmark.guidance.schedule import CONSTANT, INTERVAL_SCHEDULE, RAMP_DOWN, RAMP_UP, SCHEDULES, T_HIGH, T_LOW


def _choice(value: Any, choices, kind: str, where: str) -> str:
    name = str(value).strip().lower()
    name = ALIASES.get(name, name) if kind == RULE else name
    if name not in choices:
        raise ConfigError(f"{where}: unknown {kind} {value!r}{did_you_mean(name, choices)}; choose one of "
                          f"{', '.join(choices)}")
    return name


def parse_rules(value: Any, where: str) -> tuple[str, ...]:
    """``rule=`` as the combination rules it names, in order: ``apg``, ``fdg+apg``, ``[apg, fdg]``; ``linear``, ``""``
    and None name none."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split("+") if str(value).strip() else []
    names = [_choice(item, RULES, RULE, where) for item in items]
    names = [n for n in names if n != LINEAR]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: rule {value!r} names a combination rule twice; name each once")
    return tuple(names)


def _inherit(spec: MethodSpec, given: dict) -> dict:
    """A spec's parameters under new ones: naming a rule or a schedule anew drops the old one and its parameters."""
    old = spec.to_dict()["params"]
    if RULE in given:
        old = {k: v for k, v in old.items() if k != RULE and k not in RULE_PARAMS}
    if SCHEDULE in given or INTERVAL in given or T_LOW in given or T_HIGH in given:
        old = {k: v for k, v in old.items() if k not in (SCHEDULE, INTERVAL) and k not in SCHEDULE_PARAMS}
    return {**old, **given}


def resolve_method(method: str | Method | MethodSpec, params: Optional[Mapping[str, Any]] = None,
                   **more: Any) -> MethodSpec:
    """The validated spec of ``method`` (a name, ``module:attribute``, a Method, or a spec to re-parameterise) with
    ``params`` (and keyword parameters) over its defaults; values may be text, as typed on a command line. A guided
    method also takes ``rule`` (combination rules wrapping it), ``schedule`` and their parameters; ``interval``
    (LOW,HIGH) is the interval schedule, and APG's ``eta`` / ``norm_threshold`` given alone select APG (off values
    for the one not given), as they did before rules had names. A rule or ramp at values where it changes nothing is
    dropped, so equal images have one spec. Every mistake is one ConfigError line naming the method: an unknown
    method, parameter, rule or schedule (with did-you-mean), a value out of range, an interval that is not LOW,HIGH,
    a parameter of a rule or schedule not chosen."""
    given = dict(params or {})
    given.update(more)
    if isinstance(method, MethodSpec):
        base, source = method.method, method.source
        given = _inherit(method, given)
    else:
        base, source = lookup_method(method)
    where = f"method {source or base.name}"
    declared = {p.name: p for p in base.params}
    allowed = list(declared) + (list(RESERVED) if base.guides else [])
    for key in given:
        if key not in allowed:
            choices = ", ".join(list(declared) + ([INTERVAL, RULE, SCHEDULE] if base.guides else [])) or "no parameters"
            raise ConfigError(f"{where} has no parameter {key!r}{did_you_mean(key, allowed)}; it takes {choices}")
    values = {name: p.check(given[name], where) if name in given else p.default for name, p in declared.items()}
    if not base.guides:
        return MethodSpec(base, values, None, source)
    rules = parse_rules(given.get(RULE), where)
    implied_apg = APG not in rules and any(k in given for k in APG_PARAMS)
    rules = (APG,) + rules if implied_apg else rules
    try:
        interval = GuidanceInterval.parse(given.get(INTERVAL))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    schedule = _choice(given[SCHEDULE], list(SCHEDULES), SCHEDULE, where) if given.get(SCHEDULE) else None
    if interval is not None:
        if schedule not in (None, INTERVAL_SCHEDULE) or T_LOW in given or T_HIGH in given:
            clash = f"schedule {schedule}" if schedule not in (None, INTERVAL_SCHEDULE) else "t_low / t_high"
            raise ConfigError(f"{where}: interval {interval.low:g},{interval.high:g} and {clash} are both given; give "
                              f"the interval once (interval=LOW,HIGH is schedule=interval with t_low, t_high)")
        schedule, given = INTERVAL_SCHEDULE, {**given, T_LOW: interval.low, T_HIGH: interval.high}
    schedule = schedule or CONSTANT
    for key in given:
        owner = RULE_PARAMS.get(key) or SCHEDULE_PARAMS.get(key)
        if owner is not None and owner.name not in (*rules, schedule):
            kind = RULE if key in RULE_PARAMS else SCHEDULE
            raise ConfigError(f"{where}: parameter {key} belongs to {kind} {owner.name}; add {kind}={owner.name}")
    for name in rules:
        rule = COMBINATIONS[name]
        for p in rule.params:  # APG selected by its parameters: the one not given is off, as before
            default = rule.off[p.name] if implied_apg and name == APG else p.default
            values[p.name] = p.check(given[p.name], where) if p.name in given else default
    for p in SCHEDULES[schedule].params:
        values[p.name] = p.check(given[p.name], where) if p.name in given else p.default
    try:
        interval = SCHEDULES[schedule].interval(values)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    on = tuple(name for name in rules if COMBINATIONS[name].on(values))
    dropped = {p.name for name in rules if name not in on for p in COMBINATIONS[name].params}
    if schedule in (RAMP_UP, RAMP_DOWN) and all(values[p.name] == 1.0 for p in SCHEDULES[schedule].params):
        dropped |= {p.name for p in SCHEDULES[schedule].params}  # a ramp flat at weight 1 is the constant schedule
        schedule = CONSTANT
    values = {k: v for k, v in values.items() if k not in dropped}
    return MethodSpec(base, values, interval, source, on, schedule)
