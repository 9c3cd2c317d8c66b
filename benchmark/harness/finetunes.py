"""Several fine-tunes of one target in one experiment: ``finetunes:``, named variants of ``finetune:``.

    finetune:  {steps: 300, lr: 3.0e-4, ...}                       what every variant starts from
    finetunes:
      full: {}                                                      finetune as written
      lora-r4: {adapter: {kind: lora, rank: 4, alpha: 4}}           finetune with these keys replaced
      lora-r16: {adapter: {kind: lora, rank: 16, alpha: 16}, lr: 1.0e-3}

Each variant is a partial ``finetune``: its keys replace finetune's keys (a key's whole value: an ``adapter`` is
given in full). A variant is run as the experiment with that fine-tune and nothing else changed, so its stage
identities are those of a one-fine-tune experiment with the same settings: its fine-tune folder, sample folders and
runs.csv config hashes follow from its own settings, and the variants share the noise of each (seed, index). Without
``finetunes`` the experiment is one fine-tune, as it always was (the variant's name is empty).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from benchmark.errors import ConfigError, UserError, did_you_mean
from benchmark.models import CheckpointError, load_dit
from benchmark.models.adapter import adapter_modules
from benchmark.training.settings import TrainSettings

if TYPE_CHECKING:  # the experiment module imports this one
    from benchmark.harness.experiment import Experiment

ONE = ""  # the variant name of an experiment without ``finetunes``: runs.csv's finetune column is empty
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # names folders (plots/<variant>/) and runs.csv values


def check_variants(exp: "Experiment") -> None:
    """``finetunes`` is null, or a non-empty mapping of folder-safe names to partial fine-tunes, each of which
    makes a valid experiment (checked when the experiment is read, before anything runs)."""
    finetunes = exp.finetunes
    if finetunes is None:
        return
    if not finetunes:
        raise ValueError("finetunes is empty; name at least one variant, e.g. finetunes: {full: {}, lora-r4: {adapter: "
                         "{kind: lora, rank: 4, alpha: 4}}}, or leave finetunes out for the one finetune")
    for name, override in finetunes.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"finetunes: variant name {name!r} names folders; use letters, digits, '.', '_', '-'")
        if not isinstance(override, Mapping):
            raise ValueError(f"finetunes.{name} must be a mapping of finetune keys ({{}} for finetune as written), "
                             f"got {override!r}")
        if "adapter" in override and isinstance(override["adapter"], Mapping) and not override["adapter"]:
            raise ValueError(f"finetunes.{name}.adapter is empty; give it in full, e.g. {{kind: lora, rank: 4, "
                             f"alpha: 4}}, or null for a full fine-tune")
        variant(exp, name)


def variant_names(exp: "Experiment") -> list[str]:
    """The variants' names in the order written; [ONE] without ``finetunes``."""
    return list(exp.finetunes) if exp.finetunes is not None else [ONE]


def variant(exp: "Experiment", name: str) -> "Experiment":
    """The experiment with variant ``name``'s fine-tune and no ``finetunes``: what one variant runs. Its errors are
    one line naming the variant."""
    if exp.finetunes is None:
        if name != ONE:
            raise UserError(f"experiment {exp.name} has no finetunes; it has one fine-tune (finetune:)")
        return exp
    if name not in exp.finetunes:
        raise UserError(f"experiment {exp.name} has no fine-tune variant {name!r}{did_you_mean(name, exp.finetunes)}"
                        f"; its finetunes are {', '.join(exp.finetunes)}")
    data = exp.model_dump()
    data["finetune"] = TrainSettings.parse({**data["finetune"], **exp.finetunes[name]}, key=f"finetunes.{name}")
    data["finetunes"] = None
    try:  # the checks across sections (a method's EMA snapshot step within the variant's steps)
        one = type(exp).parse(data)
    except ConfigError as e:
        raise ConfigError(f"finetunes.{name}: {e}") from None
    one._path = exp.path  # relative paths stay relative to the experiment file
    return one


def variants(exp: "Experiment", names: Optional[Sequence[str]] = None) -> dict[str, "Experiment"]:
    """{name: the variant's experiment} of ``names`` (default: every variant), in the experiment's order."""
    known = variant_names(exp)
    chosen = known if names is None else [n for n in known if n in names] + [n for n in names if n not in known]
    return {name: variant(exp, name) for name in chosen}  # an unknown name: variant's one-line error


def check_adapter_targets(experiments: Mapping[str, "Experiment"]) -> None:
    """Each variant's adapter targets against the source's layers before the first variant runs: a fine-tune checks
    its own targets only when its turn comes, after the variants before it have run. A source that is not there yet
    (a release to download) is left to the fine-tune."""
    adapted = {name: one for name, one in experiments.items() if one.finetune.adapter is not None}
    if len(experiments) < 2 or not adapted:
        return
    try:
        source = load_dit(next(iter(adapted.values())).source_checkpoint())
    except (CheckpointError, UserError, OSError):
        return
    for name, one in adapted.items():
        try:
            adapter_modules(source, one.finetune.adapter.targets)
        except ValueError as e:
            raise ConfigError(str(e).replace("finetune.adapter", f"finetunes.{name}.adapter", 1)) from None


def parse_selection(exp: "Experiment", text: Optional[str]) -> Optional[list[str]]:
    """``dogbench run --finetunes a,b``: the named variants, each checked; None (every variant) without the flag."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if exp.finetunes is None:
        raise UserError(f"--finetunes {text!r}: experiment {exp.name} has no finetunes (one fine-tune); leave the flag "
                        f"out, or add finetunes: {{NAME: {{...}}}} to the experiment")
    if not names:
        raise UserError(f"--finetunes {text!r} names no variant; give some of {', '.join(exp.finetunes)}, or leave the "
                        f"flag out for all of them")
    unknown = [n for n in names if n not in exp.finetunes]
    if unknown:
        raise UserError(f"--finetunes {','.join(unknown)} not in experiment {exp.name}"
                        f"{did_you_mean(unknown[0], exp.finetunes)}; its finetunes are {', '.join(exp.finetunes)}")
    return names


def one_finetune(exp: "Experiment", command: str) -> "Experiment":
    """The experiment for a command that runs one fine-tune (``dogbench sweep``, ``dogbench finetune --config``):
    itself, or its only variant."""
    names = variant_names(exp)
    if len(names) > 1:
        raise UserError(f"{command} runs one fine-tune; experiment {exp.name} has {len(names)} finetunes "
                        f"({', '.join(names)}): pick one with an experiment file of base: {exp.name}, "
                        f"finetunes: null and that variant's finetune keys")
    return variant(exp, names[0])
