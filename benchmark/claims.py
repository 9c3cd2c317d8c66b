"""One claim per unit of work, so that several processes can share one results folder (one machine or a shared
filesystem) without doing anything twice.

A unit (a fine-tune, a sample set, a reference statistic) is claimed by creating ``<unit>.claim`` with O_EXCL, which
is atomic on local filesystems and NFS v3+. The file records its owner (host, pid, the process's start time) and a
heartbeat thread touches it every ``HEARTBEAT_S`` seconds while the work runs. A claim is stale, and is taken over,
when its owner is a dead process on this host (or a recycled pid: another start time), or when its heartbeat is
older than ``STALE_S`` (an owner on another host, or one that hangs). Releasing deletes the file; a crash leaves it
for the next process to take over.

    with claim(folder / "sample", "samples of dog w=1.5") as mine:
        if mine:          # nobody else holds it: do the work
            ...
        # else: another process holds it; come back to it later (``claim(..., wait=True)`` waits instead)
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

HEARTBEAT_S = 10.0
STALE_S = 60.0
SUFFIX = ".claim"


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot) from /proc, to tell a recycled pid from its owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _alive(record: dict, path: Path, stale_s: float) -> bool:
    """Whether the claim in ``path`` (its content ``record``) still has a living owner."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > stale_s:
        return False
    if record.get("host") != socket.gethostname():
        return True  # another machine: only its heartbeat tells
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = _start_time(pid)
    return start is None or record.get("start") in (None, start)


def read_claim(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a process killed at that instant: no owner, stale by its age


def try_claim(path: Path, stale_s: float = STALE_S) -> bool:
    """Create the claim file, or take it over from a dead owner; False when a living owner holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            record = read_claim(path)
            if record is None:
                continue  # released in between: try again
            if _alive(record, path, stale_s):
                return False
            # a dead owner's claim: move it aside atomically, so that of two processes taking it over one wins
            grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
            try:
                os.replace(path, grave)
                os.unlink(grave)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner(), f)
        return True
    return False


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, every_s: float):
        super().__init__(name=f"claim-heartbeat {path.name}", daemon=True)
        self.path, self.every_s, self.stopped = path, every_s, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                os.utime(self.path)
            except OSError:
                return


@contextlib.contextmanager
def claim(unit: Path, what: str = "", wait: bool = False, poll_s: float = 2.0, stale_s: float = STALE_S,
          heartbeat_s: float = HEARTBEAT_S) -> Iterator[bool]:
    """Hold the claim on ``unit`` for the block and yield True, or yield False when another living process holds it
    (with ``wait=True``: wait until it is released or its owner dies, then hold it)."""
    path = Path(f"{unit}{SUFFIX}")
    told = False
    while not try_claim(path, stale_s):
        if not wait:
            yield False
            return
        if not told:
            holder = read_claim(path) or {}
            print(f"[dogbench] waiting for {what or unit} (held by pid {holder.get('pid')} on {holder.get('host')})",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_s)
    beat = _Heartbeat(path, heartbeat_s)
    beat.start()
    try:
        yield True
    finally:
        beat.stopped.set()
        beat.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def share(units: list, attempt, poll_s: float = 2.0) -> list:
    """Do ``attempt(unit)`` for every unit, taking first the ones nobody holds and coming back to the others:
    ``attempt`` returns None when the unit's claim is held elsewhere, else its result. Returns the results in order."""
    results: dict = {}
    pending = list(range(len(units)))
    while pending:
        progressed = False
        for i in list(pending):
            result = attempt(units[i])
            if result is not None:
                results[i] = result
                pending.remove(i)
                progressed = True
        if pending and not progressed:
            time.sleep(poll_s)  # all that is left is held by others: wait for one to be released
    return [results[i] for i in range(len(units))]
