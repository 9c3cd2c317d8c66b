"""The project's user-facing errors: one line that names the fix, never a traceback.

Every layer raises these (or ``ValueError``/``FileNotFoundError`` with a one-line message); only the command line
turns them into ``dogbench CMD: error: ...``. They live in this ground module so that no library code imports the
command line.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """An error caused by the user's input: printed as one line naming the fix, no traceback."""


class ConfigError(UserError, ValueError):
    """A bad setting (experiment YAML, override or flag). Also a ValueError, so any caller that treats bad values
    as user errors prints it as one line too."""


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when nothing is close."""
    choices = [str(c) for c in choices]
    swapped = [c for c in choices if sorted(c) == sorted(str(word)) and c != str(word)]  # letters swapped: cgf -> cfg
    close = swapped[:1] or difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def first_line(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), for wrapping a foreign error."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:limit]}" if text else type(error).__name__
