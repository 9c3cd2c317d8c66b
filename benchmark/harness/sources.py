"""The checkpoints a results folder was made from: each one's sha256, recorded on first use and checked on every run.

A fine-tune's folder is keyed by the experiment's settings, which name the source checkpoint by its path; a file
replaced under the same path (re-downloaded, overwritten, damaged) would otherwise be mixed with fine-tunes made from
the old one. ``results/<exp>/sources.json`` maps each checkpoint's resolved path to the sha256 it had when the folder
first used it; a different hash later is one line naming both, before any work.
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmark.harness.experiment import Experiment
from benchmark.io import IntegrityError, atomic_write_json, cached_file_sha256, file_lock, read_json
from benchmark.models import CheckpointError, resolve_checkpoint

SOURCES_FILE = "sources.json"
LARGE_BYTES = 256 << 20  # hashing takes seconds from here on: say so


def experiment_checkpoints(exp: Experiment) -> dict[str, str]:
    """The checkpoints an experiment reads, by the key that names them: its source and any guide given as a file."""
    named = {"source.checkpoint": exp.source_checkpoint()}
    for entry in exp.method_entries():
        for name, guide in entry.guides.items():
            if guide.path is not None:
                named[f"methods[{entry.key}].guides.{name}.path"] = str(exp.resolve(guide.path))
    return named


def check_recorded_sources(exp: Experiment, results_dir: Path, say=None) -> dict[str, str]:
    """Record the sha256 of each checkpoint the experiment reads in ``results_dir/sources.json`` on first use; a file
    whose hash differs from the recorded one is an IntegrityError naming both. A checkpoint not found yet (a release
    file to download) is left to the stage that needs it. ``say``: where a progress line goes before a large file is hashed.
    Returns {resolved path: sha256} of those found."""
    record_path = Path(results_dir) / SOURCES_FILE
    found = {}
    for key, spec in experiment_checkpoints(exp).items():
        try:
            path = resolve_checkpoint(spec, download=False).resolve()
        except CheckpointError:
            continue
        if say and path.stat().st_size > LARGE_BYTES:
            say(f"hashing {key} {path} ({path.stat().st_size / 2 ** 30:.1f} GiB) to check it against {SOURCES_FILE}")
        found[str(path)] = (key, cached_file_sha256(path))
    if not found:
        return {}
    with file_lock(record_path):
        record = read_json(record_path, {}) or {}
        for path, (key, sha) in found.items():
            old = record.get(path)
            if old and old.get("sha256") != sha:
                raise IntegrityError(
                    f"{key} {path} has changed since {results_dir} first used it: its sha256 is now {sha[:12]}..., "
                    f"{old['sha256'][:12]}... when recorded on {old.get('first_used', '?')} ({record_path}); the "
                    f"fine-tunes and samples there were made from the recorded file: restore it, or give the new file "
                    f"another name (or pass another --results-root) to start afresh")
        new = {path: {"sha256": sha, "key": key, "first_used": time.strftime("%Y-%m-%d %H:%M:%S")}
               for path, (key, sha) in found.items() if path not in record}
        if new:
            atomic_write_json(record_path, {**record, **new})
    return {path: sha for path, (_, sha) in found.items()}
