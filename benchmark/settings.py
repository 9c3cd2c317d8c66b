"""Typed settings: the one schema behind every YAML section and every command-line flag.

Each layer declares its settings beside the code that uses them, as a ``Settings`` subclass (pydantic 2): typed
fields with ranges, a docstring per field (its meaning and unit, which ``--help`` shows) and unknown keys
rejected. The experiment is composed of those sections; the commands generate their flags from them
(``benchmark.cli.flags``). ``Settings.parse`` turns pydantic's report into the project's one-line error with a
did-you-mean suggestion.

Identity is declared here too, once per field: ``identity(role)`` marks what a field is to the output its section
makes, and ``Settings.identity`` reads the marks. A field without a mark is part of what the output *is* (a new
setting changes the output's identity unless its declaration says otherwise); ``HOW`` fields (batch sizes, worker
counts, compilation) are never part of it; the other roles (``AMOUNT``, ``FOLDED``, ``ADDED`` and a layer's own,
such as sampling's ``GUIDED``) are part of it except where a layer's identity passes them to ``leave_out``. Folder
names, config hashes, metric caches and run manifests all come from these identities.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from benchmark.errors import ConfigError, did_you_mean


def _whole_number(value: Any) -> Any:
    """YAML reads ``1e4`` as a string and ``24_000`` as an int: accept any spelling of a whole number."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"must be a whole number, got {value}")
        return int(value)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    try:
        if not math.isfinite(float(value)):
            raise ValueError(f"must be a finite number, got {value}")
    except (TypeError, ValueError) as e:
        if "finite" in str(e):
            raise
    return value


Count = Annotated[int, BeforeValidator(_whole_number), Field(ge=1)]          # 1, 2, ...
Index = Annotated[int, BeforeValidator(_whole_number), Field(ge=0)]          # 0, 1, ...
Real = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]


def non_empty(example: str) -> AfterValidator:
    """The check of every list the schema needs at least one item in (``Annotated[list[X], non_empty(...)]``):
    an empty one is one line naming the key and an ``example`` of a valid value."""
    def check(value):
        if not len(value):
            raise ValueError(f"is empty; give at least one value, e.g. {example}")
        return value
    return AfterValidator(check)

# One precision vocabulary for fine-tuning, sampling and decoding. fp32: full fp32 matmuls (TF32 off);
# tf32: fp32 storage with TF32 tensor-core matmuls (what PyTorch and the DiT reference code run on Ampere+);
# bf16: bf16 autocast for the network forwards, fp32 weights and diffusion arithmetic.
PRECISIONS = ("fp32", "tf32", "bf16")
_PRECISION_ALIASES = {"32": "fp32", "32-true": "fp32", "fp32": "fp32", "float32": "fp32", "tf32": "tf32",
                      "bf16": "bf16", "bf16-mixed": "bf16", "bfloat16": "bf16"}


def _precision(value: Any) -> Any:
    if isinstance(value, (str, int)) and str(value).lower() in _PRECISION_ALIASES:
        return _PRECISION_ALIASES[str(value).lower()]
    if value in ("bf16-true", "16-mixed", "fp16", "16"):
        raise ValueError(f"{value!r} is not supported (bf16 weights cannot carry a 0.9999 EMA; fp16 needs loss "
                         f"scaling DiT never used); choose one of {', '.join(PRECISIONS)}")
    return value


Precision = Annotated[Literal["fp32", "tf32", "bf16"], BeforeValidator(_precision)]

# What a field is to its section's output (``identity(role)``; unmarked: part of what the output is)
HOW = "how"          # how fast or where (batch size, workers, compile, checkpoint frequency): never part of it
AMOUNT = "amount"    # how much is made (sample count, optimizer steps): a folder that extends leaves it out
FOLDED = "folded"    # enters through a value the section derives (the section's identity says which)
ADDED = "added"      # declared after outputs were made: part of it only when not at its default, so they keep theirs
_ROLE = "identity"   # the json_schema_extra key holding the role


def identity(role: str, **extra: Any) -> dict:
    """A field's ``json_schema_extra`` saying what it is to the output: ``Field(4, json_schema_extra=identity(HOW))``
    (``extra``: other schema entries, e.g. ``null_word``)."""
    return {_ROLE: role, **extra}


def identity_role(field) -> Optional[str]:
    """The role marked on a pydantic field, or None (part of what the output is)."""
    extra = field.json_schema_extra
    return extra.get(_ROLE) if isinstance(extra, dict) else None


class Settings(BaseModel):
    """A section of settings: typed, range-checked, unknown keys rejected, field docstrings as help."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              protected_namespaces=())

    @classmethod
    def parse(cls, data: Any = None, key: str = ""):
        """An instance from a mapping (or an instance), every mistake one ``ConfigError`` line; ``key`` is the
        section's dotted name in messages (``finetune``)."""
        if isinstance(data, cls):
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{key or 'the settings'} must be a mapping of settings, got {data!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(describe_error(e, cls, key)) from None

    def replaced(self, **changes):
        """A validated copy with ``changes`` applied."""
        return type(self).parse({**self.model_dump(), **changes})

    def to_dict(self) -> dict:
        """Plain JSON-able values (what YAML sees)."""
        return self.model_dump(mode="json")

    def identity(self, *leave_out: str) -> dict:
        """The fields that are part of what this section's output is, as JSON-able values: every field but those
        marked ``HOW`` and those whose role is in ``leave_out``; a nested section contributes its own identity."""
        values = self.to_dict()
        out = {}
        for name, field in type(self).model_fields.items():
            role = identity_role(field)
            if role == HOW or (role is not None and role in leave_out):
                continue
            value = getattr(self, name)
            if role == ADDED and value == field.get_default(call_default_factory=True):
                continue
            out[name] = value.identity(*leave_out) if isinstance(value, Settings) else values[name]
        return out


# ---------------------------------------------------------------------------------------------------------------
# Errors as one line


def _owner_and_field(cls: type, loc: tuple) -> tuple[Optional[type], Optional[str]]:
    """The Settings class and field name that ``loc`` ends in (list indices skipped), for suggestions."""
    owner, name = cls, None
    for part in loc:
        if isinstance(part, int):
            continue
        if name is not None:  # descend into the previous field's settings class
            owner = _settings_type(owner.model_fields[name].annotation)
            if owner is None:
                return None, None
        if part not in owner.model_fields:
            return owner, None
        name = part
    return owner, name


def _settings_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _settings_type(arg)
        if found is not None:
            return found
    return None


def describe_error(error: ValidationError, cls: type, key: str = "") -> str:
    """The first problem of a pydantic ValidationError as one line that names the setting and the fix."""
    errors = error.errors()
    # a misspelt key also shows up as the right key "missing": name the misspelling, which says both
    problem = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in problem["loc"]  # drop pydantic's internal steps (union tags, validator names)
                if not (isinstance(p, str) and ("[" in p or "{" in p or p.startswith("function-"))))
    names = [key] if key and key != "--" else []
    for part in loc:
        if isinstance(part, int) and names:
            names[-1] += f"[{part}]"
        else:
            names.append(str(part))
    full = ".".join(names) or "the settings"
    if key == "--" and names:  # command-line flags: name the flag the user typed
        full = "--" + names[0].replace("_", "-")
        if len(names) > 1:  # a key inside the flag's value: --adapter rank=0
            full += " " + ".".join(names[1:])
    kind, value, ctx = problem["type"], problem.get("input"), problem.get("ctx") or {}
    if kind == "extra_forbidden":
        owner, _ = _owner_and_field(cls, loc)
        valid = list(owner.model_fields) if owner else []
        missing = [e["loc"][-1] for e in errors if e["type"] == "missing" and len(e["loc"]) == len(problem["loc"])]
        hint = did_you_mean(loc[-1], missing) or did_you_mean(loc[-1], valid)
        prefix = full.rsplit(".", 1)[0] + "." if "." in full else ""
        hint = hint.replace("did you mean '", f"did you mean '{prefix}") if hint else \
            (f"; valid keys here: {', '.join(valid)}" if valid else "")
        return f"unknown config key {full!r}{hint}"
    if kind == "missing":
        return f"{full} is required; " + (f"pass {full} VALUE" if key == "--" else f"add {full}: ...")
    if kind in ("literal_error", "enum"):
        expected = [a for a in _literal_values(cls, loc)]
        choices = ", ".join(map(str, expected)) or ctx.get("expected", "")
        return f"{full}={value!r} is not one of {choices}{did_you_mean(value, expected)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"{full}={value} must be {bounds[kind]} {limit}; set {full} to a value {bounds[kind]} {limit}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{full} must be a whole number, got {value!r}; e.g. {full}=100"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{full} must be a finite number, got {value!r}; e.g. {full}=1.0"
    if kind in ("bool_parsing", "bool_type"):
        return f"{full} must be true or false, got {value!r}"
    if kind in ("string_type",):
        return f"{full} must be a string, got {value!r}"
    if kind in ("list_type", "tuple_type", "too_short", "too_long"):
        return f"{full} {problem['msg'].lower()}, got {value!r}"
    message = str(ctx.get("error") or problem["msg"]).removeprefix("Value error, ")
    if not names or message.startswith(full):  # a check of the whole section names its own keys
        return message
    return f"{full}: {message}"


def _literal_values(cls: type, loc: tuple) -> list:
    owner, name = _owner_and_field(cls, loc)
    return literal_choices(owner.model_fields[name].annotation) if owner is not None and name else []


def literal_choices(annotation: Any) -> list:
    """The allowed values of a Literal (also inside Optional / list / Annotated), else []."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    for arg in get_args(annotation):
        found = literal_choices(arg)
        if found:
            return found
    return []
