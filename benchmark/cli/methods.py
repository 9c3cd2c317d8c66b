"""``dogbench methods``: every guidance method (built-in and the plug-ins named), combination rule and schedule, with
its guides, parameters (range, default, unguided value) and model calls per step."""
from __future__ import annotations

from benchmark.guidance import (COMBINATIONS, SCHEDULES, Method, Param, lookup_method, registered_methods,
                                resolve_method)

INDENT = "      "


def configure(p, name: str) -> None:
    p.description = ("List the guidance methods (built-ins, and plug-ins named as module:attribute), the combination "
                     "rules that wrap any guided method (rule=NAME) and the schedules (schedule=NAME), with their "
                     "parameters and model forwards per image per step.")
    p.add_argument("plugins", nargs="*", metavar="MODULE:ATTRIBUTE",
                   help="plug-in methods to list too; the module must import (e.g. on PYTHONPATH) (default: none)")
    p.set_defaults(func=run)


def param_line(p: Param, off: float | None = None) -> str:
    text = p.range_text() + (f" off {off:g}" if off is not None else "")
    return f"{INDENT}{p.name:<15} {text:<40} {p.doc}".rstrip()


def guide_line(method: Method, guide) -> str:
    label = {"null": "its null label", "cond": "the sample's class", "random": "a random other class"}[guide.label]
    unguided = {p.name: p.unguided for p in method.params}
    off = f"off at {guide.scale}={unguided[guide.scale]:g}" if guide.scale else "always on"
    return f"{INDENT}guide {guide.name}: the {guide.model} model with {label} ({off})"


def method_block(method: Method, source: str) -> list[str]:
    step = " (rule sees the step: at.t, at.progress)" if method.step_aware else ""
    lines = [f"  {source:<15} {method.calls_per_step()} calls/step  {method.doc or method.name}{step}"]
    lines += [guide_line(method, g) for g in method.guides]
    lines += [param_line(p) for p in method.params]
    return lines


def listing(plugins: list[str]) -> str:
    lines = ["Guidance methods (--method NAME; an experiment's methods: [NAME]; your own as module:attribute)"]
    for name, method in registered_methods().items():
        lines += method_block(method, name)
    for reference in plugins:
        method, source = lookup_method(reference)
        resolve_method(method)  # its declaration resolves at its defaults (one line naming the method if not)
        lines += method_block(method, source)
    lines += ["", "Combination rules (rule=NAME on any guided method, e.g. --param rule=cfg-zero-star; rule=A+B chains "
                  "them)", f"  {'linear':<15} the method's own rule alone (the default)"]
    for rule in COMBINATIONS.values():
        lines.append(f"  {rule.name:<15} {rule.title}: {rule.doc}")
        lines += [param_line(p, rule.off.get(p.name)) for p in rule.params]
    lines += ["", "Schedules (schedule=NAME on any guided method; interval=LOW,HIGH is schedule=interval)"]
    for schedule in SCHEDULES.values():
        lines.append(f"  {schedule.name:<15} {schedule.doc}")
        lines += [param_line(p) for p in schedule.params]
    lines += ["", "calls/step: model forwards per image at a step where every guide runs (a batch-2B call counts 2); "
                  "a sample set's nfe is steps x that, less the guide calls a schedule or zero-init skips."]
    return "\n".join(lines)


def run(args) -> int:
    print(listing(args.plugins))
    return 0
