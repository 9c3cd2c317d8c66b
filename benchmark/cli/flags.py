"""Command-line flags generated from a ``Settings`` class: one flag per field, its docstring and default as help.

Every generated flag defaults to None, so that only what the user typed overrides the other sources of a setting
(an experiment's section, the checkpoint): ``settings_from_args`` merges the typed values over a base mapping and
validates the result with the schema, so a bad flag is the same one-line error as a bad YAML value.
Values are given as on the command line: lists comma-separated (``--w-grid 1,1.5,2``), ``none``-like words where a
field's docstring says so (``--guided-channels all``), booleans as ``--flag`` / ``--no-flag``.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence, get_args, get_origin

from benchmark.settings import Settings, literal_choices


def _null_word(field) -> Optional[str]:
    extra = field.json_schema_extra or {}
    return extra.get("null_word") if isinstance(extra, dict) else None


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (get_origin(annotation) is not None and bool in get_args(annotation)
                                  and all(a in (bool, type(None)) for a in get_args(annotation)))


def _has_type(annotation: Any, kind: type) -> bool:
    """``annotation`` is ``kind``, or Optional / Annotated around it (the metavar N or X in --help)."""
    return annotation is kind or (get_origin(annotation) is not None and get_origin(annotation) not in (list, tuple)
                                  and any(_has_type(a, kind) for a in get_args(annotation)))


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) in (list, tuple):
        return True
    return any(_is_list(a) for a in get_args(annotation) if a is not type(None))


def show_default(value: Any, null_word: Optional[str] = None) -> str:
    """A default as the user would type it."""
    if value is None:
        return null_word or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(show_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_settings_flags(parser, cls: type[Settings], *, exclude: Sequence[str] = (), defaults: Optional[dict] = None,
                       prefix: str = "", dest_prefix: str = "", notes: Optional[dict] = None,
                       names: Optional[dict] = None) -> None:
    """Add ``--<prefix><field>`` for every field of ``cls`` (but ``exclude``) to ``parser`` (a parser or group).
    ``defaults`` replaces the schema default in the help text (e.g. a command's own default); ``notes`` adds a
    sentence to a field's help; ``names`` gives a field other flag names than its own (the first shown in --help),
    e.g. ``{"checkpoint": ["source"]}``."""
    defaults, notes, names = defaults or {}, notes or {}, names or {}
    for name, field in cls.model_fields.items():
        if name in exclude:
            continue
        flags = ["--" + (prefix + flag).replace("_", "-") for flag in names.get(name, [name])]
        null_word = _null_word(field)
        default = defaults.get(name, field.default)
        text = (field.description or name.replace("_", " ")).rstrip(".")
        if name in notes:
            text += f"; {notes[name]}"
        # argparse %-formats help strings: a literal % in a docstring ("95% interval") must be doubled
        help_text = f"{text} (default: {show_default(default, null_word)})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest_prefix + name, "default": None, "help": help_text}
        annotation = field.annotation
        if _is_bool(annotation):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            choices = literal_choices(annotation)
            if choices and not _is_list(annotation):
                kwargs["choices"] = [str(c) for c in choices] + ([null_word] if null_word else [])
                kwargs["metavar"] = "{" + ",".join(kwargs["choices"]) + "}"
            elif _is_list(annotation):
                kwargs["metavar"] = "A,B,..."
            elif _has_type(annotation, int):
                kwargs["metavar"] = "N" + (f"|{null_word}" if null_word else "")
            elif _has_type(annotation, float):
                kwargs["metavar"] = "X" + (f"|{null_word}" if null_word else "")
        parser.add_argument(*flags, **kwargs)


def flag_values(cls: type[Settings], args: argparse.Namespace, dest_prefix: str = "") -> dict:
    """The fields of ``cls`` the user set on the command line, converted from their text."""
    values = {}
    for name, field in cls.model_fields.items():
        value = getattr(args, dest_prefix + name, None)
        if value is None:
            continue
        if isinstance(value, str):
            null_word = _null_word(field)
            if null_word and value.strip().lower() in (null_word, "none", "null"):
                value = None
            elif _is_list(field.annotation):
                value = [v.strip() for v in value.split(",") if v.strip()]
            else:  # a choice that is not a string (Literal[3, 4]): the choice whose text was typed
                value = next((c for c in literal_choices(field.annotation) if str(c) == value), value)
        values[name] = value
    return values


def settings_from_args(cls: type[Settings], args: argparse.Namespace, base: Optional[dict] = None,
                       dest_prefix: str = ""):
    """``cls`` validated from ``base`` (e.g. an experiment's section) with the typed flags on top; an error names
    the flag."""
    data = dict(base.to_dict() if isinstance(base, Settings) else base or {})
    data.update(flag_values(cls, args, dest_prefix))
    return cls.parse(data, "--")
