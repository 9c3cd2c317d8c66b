"""runs.csv: one row per evaluated sample set, with everything needed to trust and reproduce it.

A row is keyed by (dataset, phase, method, w, params, seed, finetune): ``method`` is the label of an experiment's method
entry (``none`` for the unguided set), ``w`` its scale (empty for a method without one), ``params`` its other
parameters as ``name=value`` words (empty for none, cfg and dog). ``phase`` says what the samples were for: ``selection`` (choose
each method's best w; never reported), ``report`` (the numbers the leaderboard shows, on seeds that share no noise
with the selection seeds) or ``control`` (the real-data floor and the seed-noise row). Then the metrics, then the
provenance: sample count, checkpoint hashes, feature networks, library versions, git commit, config hash, time, and
the sample folder (relative to the results folder) whose cached features every interval is computed from. Last,
``finetune``: the fine-tune variant that sampled (benchmark/harness/finetunes.py; empty in an experiment of one
fine-tune), appended after the columns that files written before it have; then what the set cost (``nfe``, FLOPs
and measured seconds per image, the device) and, for a cell of a factorised design, its three axes.
"""
from __future__ import annotations

import datetime
import math
import os
import subprocess
from typing import Iterable, Mapping, Optional, Union

import numpy as np
import pandas as pd
import torch

import benchmark
from benchmark.guidance import W_DECIMALS
from benchmark.harness.experiment import METHODS
from benchmark.harness.methods import UNGUIDED
from benchmark.io import REPO_ROOT, atomic_open, file_lock
from benchmark.metrics.registry import COLUMN_ORDER as METRICS

PHASES = ("selection", "report", "control")
CONTROL_METHODS = ("real",)  # a control row that is not a generator: real target images scored like samples
VARIANT = "finetune"  # the fine-tune variant's name; "" for an experiment of one fine-tune
RUN_KEY = ("dataset", "phase", "method", "w", "params", "seed", VARIANT)
PROVENANCE_COLUMNS = (
    "num_samples",          # images the metrics were computed on
    "sampling_steps",
    "finetuned_sha256",     # of the fine-tuned checkpoint that sampled
    "pretrained_sha256",    # of the source checkpoint (DoG's guide)
    "feature_networks",     # e.g. "fid=inception-v3 (pytorch-fid weights); fd_effnet=efficientnet-lite0"
    "preprocessing",        # e.g. "uint8 PNG -> bicubic 299, [0,1]"
    "torch_version",
    "dogbench_version",
    "git_commit",
    "experiment",
    "config_hash",
    "sample_dir",           # the sample folder, relative to the results folder (its cached features)
    "timestamp",            # UTC, ISO 8601
)
COMPUTE_COLUMNS = (
    "nfe",                   # model forwards per image (steps x calls per step; a batch-2B call counts 2)
    "flops_per_image",       # nfe x FLOPs of one forward of the fine-tuned DiT (2 per multiply-add); empty if unknown
    "sampling_s_per_image",  # measured: network forwards and decoding, over every process that sampled the set
    "sampling_device",       # what that time ran on
)
MEASURED_COLUMNS = ("sampling_s_per_image",)  # wall time: two runs that make the very same images differ here only
DESIGN_COLUMNS = ("design_negative", "design_rule", "design_schedule")  # a design cell's axes (harness/design.py)
# appended after the columns that files written before them have, so older runs.csv files still read
RUNS_COLUMNS = (tuple(k for k in RUN_KEY if k != VARIANT) + METRICS + PROVENANCE_COLUMNS + (VARIANT,)
                + COMPUTE_COLUMNS + DESIGN_COLUMNS)

Rows = Union[pd.DataFrame, Iterable[Mapping]]


def runs_frame(rows: Rows) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) as a runs table: every RUNS_COLUMNS column present (missing -> empty) in order,
    then any extra columns; w rounded to 4 decimals, seed an int, metrics numeric."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in RUNS_COLUMNS:
        if column not in df.columns:
            df[column] = np.nan
    if len(df):
        # w: none for real images and some methods; finetune: empty for one fine-tune
        for column in (c for c in RUN_KEY if c not in ("w", "params", VARIANT)):
            lacking = df[column].isna()
            if lacking.any():
                raise ValueError(f"runs rows need {', '.join(RUN_KEY)}; {lacking.sum()} row(s) lack {column!r}")
        phases = sorted(set(df["phase"]) - set(PHASES))
        if phases:
            raise ValueError(f"unknown phase(s) {phases} in runs rows; phases are {', '.join(PHASES)}")
    df["w"] = df["w"].astype(float).round(W_DECIMALS)
    df["phase"] = df["phase"].astype(str)
    df["params"] = df["params"].fillna("").astype(str)
    df[VARIANT] = df[VARIANT].fillna("").astype(str)
    df["seed"] = df["seed"].astype("int64")
    df["dataset"] = df["dataset"].astype(str)
    for column in METRICS:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    if ((df["method"] == UNGUIDED) & (df["w"] != 1.0)).any():
        raise ValueError("method 'none' (fine-tune only) rows must have w = 1")
    extras = [c for c in df.columns if c not in RUNS_COLUMNS]
    return df[list(RUNS_COLUMNS) + extras].reset_index(drop=True)


def _sort(df: pd.DataFrame, seen: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Datasets in order of first appearance, then fine-tune variants (likewise), then phases, then methods none <
    cfg < dog, then w, then seed (first appearance: in ``seen``, the rows before a merge replaced some, if given)."""
    seen = df if seen is None else seen
    dataset_order = {name: i for i, name in enumerate(dict.fromkeys(seen["dataset"]))}
    variant_order = {name: i for i, name in enumerate(dict.fromkeys(seen[VARIANT]))} if VARIANT in df.columns else {}
    method_order = {name: i for i, name in enumerate(METHODS + tuple(m for m in dict.fromkeys(df["method"])
                                                                      if m not in METHODS) + CONTROL_METHODS)}
    keys = pd.DataFrame({
        "d": df["dataset"].map(dataset_order),
        "f": df[VARIANT].map(variant_order) if VARIANT in df.columns else 0,
        "p": df["phase"].map({p: i for i, p in enumerate(PHASES)}) if "phase" in df.columns else 0,
        "m": df["method"].map(method_order),
        "w": df["w"].fillna(math.inf),
        "q": df["params"] if "params" in df.columns else "",
    })
    columns = ["d", "f", "p", "m", "w", "q"]
    if "seed" in df.columns:
        keys["s"] = df["seed"]
        columns.append("s")
    return df.loc[keys.sort_values(columns, kind="stable").index].reset_index(drop=True)


def merge_runs(old: Rows, new: Rows) -> pd.DataFrame:
    """``old`` updated with ``new``: a row of ``new`` replaces the ``old`` row with the same key."""
    both = pd.concat([runs_frame(old), runs_frame(new)], ignore_index=True)
    return _sort(both.drop_duplicates(subset=list(RUN_KEY), keep="last"), both)


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """runs.csv as a DataFrame; an empty one with the standard columns when the file does not exist yet."""
    try:
        df = pd.read_csv(path, dtype={"dataset": str, "method": str, "git_commit": str, "config_hash": str,
                                      "finetuned_sha256": str, "pretrained_sha256": str, "phase": str,
                                      "sample_dir": str, "params": str, VARIANT: str}, keep_default_na=False,
                         na_values=[""])
    except FileNotFoundError:
        return runs_frame([])
    return runs_frame(df)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically; NaN becomes an empty field."""
    with atomic_open(path, "w") as f:
        df.to_csv(f, index=False, na_rep="")


def write_runs(rows: Rows, path: str | os.PathLike) -> pd.DataFrame:
    df = _sort(runs_frame(rows))
    write_csv(df, path)
    return df


def update_runs(path: str | os.PathLike, new_rows: Rows) -> pd.DataFrame:
    """Add (or replace) rows in runs.csv; what a resumed run calls after each evaluation."""
    with file_lock(path):  # sweep workers append concurrently
        df = merge_runs(read_runs(path), new_rows)
        write_csv(df, path)
    return df


def run_provenance() -> dict:
    """The environment columns of a runs.csv row: library versions, git commit (``-dirty`` when the working tree
    has changes; empty outside a git checkout) and the UTC time."""
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "torch_version": torch.__version__,
        "dogbench_version": benchmark.__version__,
        "git_commit": commit,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def present_metrics(df: pd.DataFrame) -> list[str]:
    """The metric columns that hold at least one value, in runs.csv order."""
    return [m for m in METRICS if m in df.columns and df[m].notna().any()]
