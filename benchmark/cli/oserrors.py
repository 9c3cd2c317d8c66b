"""An OSError that reaches the command line as one line naming the path, the flag, key or variable that named it,
and what to do: never a bare ``[Errno 30] Read-only file system: .../.config.yaml.XXXX.tmp``.

Commands check the locations they write before any work (``output_folder``, ``results_folder``); this is the net
under everything else: the path is matched against the command's own flags and ``key=value`` overrides, the
environment variables that move locations, and the default results folder.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Optional

from benchmark.io import DATA_ROOT_ENV, RESULTS_ROOT_ENV
from benchmark.models.checkpoint import CHECKPOINT_DIR_ENV

WHAT = {
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not accessible (permission denied)",
    errno.EPERM: "cannot be written here (operation not permitted)",
    errno.ENOTDIR: "has a file where a folder is expected",
    errno.EISDIR: "is a folder where a file is expected",
    errno.ENOENT: "does not exist",
    errno.ENOSPC: "cannot be written: the disk is full",
    errno.EDQUOT: "cannot be written: the disk quota is exceeded",
    errno.ENAMETOOLONG: "is too long a name",
}
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp$")  # benchmark.io.atomic_open's temporary siblings


def shown_path(path: str) -> Path:
    """The file the user knows: an atomic write's temporary ``.NAME.XXXX.tmp`` is shown as ``NAME``."""
    p = Path(path)
    match = TEMPORARY.match(p.name)
    return p.with_name(match["name"]) if match else p


def _inside(path: Path, folder: str) -> bool:
    try:
        return bool(folder) and (path == Path(folder).expanduser().resolve()
                                 or Path(folder).expanduser().resolve() in path.parents)
    except (OSError, RuntimeError, ValueError):
        return False


def named_by(path: Path, args) -> Optional[tuple[str, str]]:
    """(where ``path`` came from, what to change) for the flag (``--results-root``), override key (``data_root``) or
    variable (``$DOGBENCH_RESULTS``) whose value holds it (the longest match), or the default results folder; None
    when nothing does."""
    candidates: list[tuple[str, str]] = []
    for name, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if not isinstance(item, str) or not item:
                continue
            key, sep, rest = item.partition("=")
            if name == "overrides" and sep:
                candidates.append((key.strip(), rest.strip()))
            elif name not in ("func", "command", "overrides"):
                candidates.append(("--" + name.replace("_", "-"), item))
    for env in (RESULTS_ROOT_ENV, DATA_ROOT_ENV, CHECKPOINT_DIR_ENV):
        if os.environ.get(env):
            candidates.append((f"${env}", os.environ[env]))
    candidates.append(("--results-root's default ./results", "results"))
    matches = [(len(str(Path(v).expanduser().resolve())), k) for k, v in candidates if _inside(path, v)]
    if not matches:
        return None
    label = max(matches)[1]
    return label, label.split("'")[0]


def os_error_line(error: OSError, args) -> str:
    """One line: the path (as the user knows it), what is wrong, where it came from and what to do."""
    if not error.filename:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    path = shown_path(str(error.filename))
    what = WHAT.get(error.errno, f"cannot be used ({error.strerror or type(error).__name__})")
    found = named_by(path if path.is_absolute() else Path.cwd() / path, args)
    source, knob = found or ("", "")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space and rerun the same command (finished work is kept)"
    elif error.errno == errno.ENOENT:
        fix = f"check {knob}" if knob else "check the path"
    else:
        fix = f"point {knob} at a location you can write to" if knob else "fix the path or its permissions"
    return f"{path} {what}{f' (from {source})' if source else ''}; {fix}"
