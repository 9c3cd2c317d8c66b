"""What W&B wrote offline, read back from a run's transaction log (``offline-run-*/run-<id>.wandb``): the run's
id, group, job type, tags and name, its config and its history rows. The log is W&B's record format: a 7-byte
header (":W&B", magic, version), then 32 KiB blocks of records (4-byte checksum, 2-byte length, 1-byte type: full,
first, middle, last) holding serialized ``Record`` protocol buffers."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32 * 1024
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, parts = HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        parts += data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _items(items) -> Iterator[tuple[tuple[str, ...], object]]:
    for item in items:
        yield (tuple(item.nested_key) or (item.key,)), json.loads(item.value_json)


def _set(tree: dict, key: tuple[str, ...], value) -> None:
    for part in key[:-1]:
        tree = tree.setdefault(part, {})
    tree[key[-1]] = value


def read_run(folder: Path) -> dict:
    """One offline run folder: {id, group, job_type, tags, name, start (ns), config, history: [row, ...]}."""
    (log,) = Path(folder).glob("run-*.wandb")
    run: dict = {"config": {}, "history": []}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, group=r.run_group, job_type=r.job_type, tags=list(r.tags), name=r.display_name,
                       start=r.start_time.ToNanoseconds())
            for key, value in _items(r.config.update):
                _set(run["config"], key, value)
        elif kind == "config":
            for key, value in _items(record.config.update):
                _set(run["config"], key, value)
        elif kind == "history":
            row: dict = {}
            for key, value in _items(record.history.item):
                _set(row, key, value)
            run["history"].append(row)
    run["config"].pop("_wandb", None)
    return run


def read_runs(results_dir: Path) -> list[dict]:
    """Every offline run folder under ``results_dir/wandb``, in the order the runs started, each with its
    ``folder`` (folder names hold the start time in seconds only)."""
    runs = [{**read_run(folder), "folder": folder} for folder in Path(results_dir, "wandb").glob("offline-run-*")]
    return sorted(runs, key=lambda run: run["start"])
