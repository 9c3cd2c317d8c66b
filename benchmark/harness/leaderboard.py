"""runs.csv (every evaluated sample set) and leaderboard.csv (each method at its best w), as pure functions.

runs.csv has one row per dataset x method x w x seed: the metrics, then what is needed to trust and reproduce the
row (sample count, checkpoint hashes, feature networks, library versions, git commit, config hash, time).

leaderboard.csv has, per dataset, each method at its best w (chosen by ``select_by``: lowest for a Frechet
distance, highest for precision/recall/density/coverage; with several seeds the mean over seeds decides, and the
std and seed count are reported), then an ``average`` row per method over the datasets that have every method,
and on the DoG rows the paper's relative improvement for each FD metric:

    improvement % = (baseline - dog) / baseline * 100,   baseline = CFG or fine-tune only (``none``)

On the average row the improvement is computed from the averaged FDs, as the paper's "average" column is.

w = 1 is shared: CFG and DoG at w = 1 are the unguided conditional sample, i.e. the ``none`` row. With
``shared_w1=True`` (pass ``1.0 in experiment.w_values()``) a ``none`` row also competes as cfg and dog at w = 1.
"""
from __future__ import annotations

import datetime
import math
import os
import subprocess
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

import torch

import benchmark
from benchmark.guidance import W_DECIMALS
from benchmark.harness.experiment import METHODS
from benchmark.io import REPO_ROOT, atomic_open, file_lock
from benchmark.metrics.registry import COLUMN_ORDER as METRICS
from benchmark.metrics.registry import COLUMNS, FRECHET_COLUMNS
RUN_KEY = ("dataset", "method", "w", "seed")
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
    "timestamp",            # UTC, ISO 8601
)
RUNS_COLUMNS = RUN_KEY + METRICS + PROVENANCE_COLUMNS
AVERAGE = "average"  # the dataset name of the leaderboard's mean-over-datasets rows
BASELINES = ("cfg", "none")

Rows = Union[pd.DataFrame, Iterable[Mapping]]


def improvement_column(metric: str, baseline: str) -> str:
    return f"{metric}_improvement_vs_{baseline}_pct"


def relative_improvement(baseline: float, dog: float) -> float:
    """The paper's (baseline - dog) / baseline * 100, for distances (lower is better); NaN when undefined."""
    if baseline is None or dog is None or not np.isfinite(baseline) or not np.isfinite(dog) or baseline == 0:
        return math.nan
    return (baseline - dog) / baseline * 100.0


def is_lower_better(metric: str) -> bool:
    return COLUMNS[metric].lower_is_better


# ----------------------------------------------------------------------------------------------------------------
# runs.csv


def runs_frame(rows: Rows) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) as a runs table: every RUNS_COLUMNS column present (missing -> empty) in order,
    then any extra columns; w rounded to 4 decimals, seed an int, metrics numeric."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in RUNS_COLUMNS:
        if column not in df.columns:
            df[column] = np.nan
    if len(df):
        for column in RUN_KEY:
            if df[column].isna().any():
                raise ValueError(f"runs rows need {', '.join(RUN_KEY)}; {df[column].isna().sum()} row(s) lack {column!r}")
        unknown = sorted(set(df["method"]) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown} in runs rows; methods are {', '.join(METHODS)}")
    df["w"] = df["w"].astype(float).round(W_DECIMALS)
    df["seed"] = df["seed"].astype("int64")
    df["dataset"] = df["dataset"].astype(str)
    for column in METRICS:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    if ((df["method"] == "none") & (df["w"] != 1.0)).any():
        raise ValueError("method 'none' (fine-tune only) rows must have w = 1")
    extras = [c for c in df.columns if c not in RUNS_COLUMNS]
    return df[list(RUNS_COLUMNS) + extras].reset_index(drop=True)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    """Datasets in order of first appearance, then methods none < cfg < dog, then w, then seed."""
    dataset_order = {name: i for i, name in enumerate(dict.fromkeys(df["dataset"]))}
    method_order = {name: i for i, name in enumerate(METHODS)}
    keys = pd.DataFrame({
        "d": df["dataset"].map(dataset_order),
        "m": df["method"].map(method_order),
        "w": df["w"].fillna(math.inf),
    })
    columns = ["d", "m", "w"]
    if "seed" in df.columns:
        keys["s"] = df["seed"]
        columns.append("s")
    return df.loc[keys.sort_values(columns, kind="stable").index].reset_index(drop=True)


def merge_runs(old: Rows, new: Rows) -> pd.DataFrame:
    """``old`` updated with ``new``: a row of ``new`` replaces the ``old`` row with the same dataset/method/w/seed."""
    both = pd.concat([runs_frame(old), runs_frame(new)], ignore_index=True)
    return _sort(both.drop_duplicates(subset=list(RUN_KEY), keep="last"))


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """runs.csv as a DataFrame; an empty one with the standard columns when the file does not exist yet."""
    try:
        df = pd.read_csv(path, dtype={"dataset": str, "method": str, "git_commit": str, "config_hash": str,
                                      "finetuned_sha256": str, "pretrained_sha256": str})
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


# ----------------------------------------------------------------------------------------------------------------
# From runs to the leaderboard


def present_metrics(df: pd.DataFrame) -> list[str]:
    """The metric columns that hold at least one value, in runs.csv order."""
    return [m for m in METRICS if m in df.columns and df[m].notna().any()]


def with_shared_w1(rows: Rows) -> pd.DataFrame:
    """Add, for each ``none`` row, copies as cfg and dog at w = 1 (for the methods present on that dataset and
    not already measured there at w = 1): the same samples, so the same metrics."""
    df = runs_frame(rows)
    copies = []
    for dataset, group in df.groupby("dataset", sort=False):
        guided = [m for m in ("cfg", "dog") if m in set(group["method"])]
        measured = set(zip(group["method"], group["w"], group["seed"]))
        for _, row in group[group["method"] == "none"].iterrows():
            for method in guided:
                if (method, 1.0, row["seed"]) not in measured:
                    copies.append({**row.to_dict(), "method": method})
    return _sort(pd.concat([df, runs_frame(copies)], ignore_index=True)) if copies else df


def aggregate_seeds(rows: Rows, shared_w1: bool = True) -> pd.DataFrame:
    """One row per dataset x method x w: the mean of each metric over seeds, its std (sample std, ddof=1; empty
    with one seed) as ``<metric>_std``, and ``n_seeds``."""
    df = with_shared_w1(rows) if shared_w1 else runs_frame(rows)
    metrics = present_metrics(df)
    grouped = df.groupby(["dataset", "method", "w"], sort=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for metric in metrics:
        out[metric] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return _sort(out.reset_index())


def select_best(rows: Rows, select_by: str = "fid", shared_w1: bool = True) -> pd.DataFrame:
    """Per dataset x method, the w whose mean ``select_by`` is best (ties: the smaller w)."""
    agg = aggregate_seeds(rows, shared_w1=shared_w1)
    if select_by not in agg.columns:
        raise ValueError(f"select_by={select_by!r} has no values in the runs; choose one of {', '.join(present_metrics(agg)) or '(none)'}")
    agg = agg[agg[select_by].notna()]
    ascending = is_lower_better(select_by)
    ranked = agg.sort_values([select_by, "w"], ascending=[ascending, True], kind="stable")
    best = ranked.groupby(["dataset", "method"], sort=False).head(1)
    return _sort(best)


def build_leaderboard(rows: Rows, select_by: str = "fid", shared_w1: bool = True) -> pd.DataFrame:
    """The leaderboard table (see the module docstring for its rows and columns)."""
    best = select_best(rows, select_by, shared_w1)
    metrics = [m for m in METRICS if m in best.columns]
    best["n_datasets"] = np.nan

    # the average over the datasets that have every method, so that each method is averaged over the same ones
    methods = [m for m in METHODS if m in set(best["method"])]
    counts = best.groupby("dataset", sort=False)["method"].nunique()
    complete = [d for d, n in counts.items() if n == len(methods)]
    averages = []
    if complete:
        subset = best[best["dataset"].isin(complete)]
        for method in methods:
            values = subset[subset["method"] == method]
            averages.append({"dataset": AVERAGE, "method": method, "n_datasets": len(complete),
                             **{m: values[m].mean() for m in metrics}})
    board = pd.concat([best, pd.DataFrame(averages)], ignore_index=True) if averages else best

    for metric in (m for m in FRECHET_COLUMNS if m in metrics):
        for baseline in BASELINES:
            column = improvement_column(metric, baseline)
            board[column] = np.nan
            for dataset, group in board.groupby("dataset", sort=False):
                by_method = group.set_index("method")[metric]
                if "dog" in by_method and baseline in by_method:
                    dog_index = group.index[group["method"] == "dog"][0]
                    board.loc[dog_index, column] = relative_improvement(by_method[baseline], by_method["dog"])

    for count in ("n_seeds", "n_datasets"):  # whole numbers, empty where they do not apply
        board[count] = board[count].astype("Int64")
    columns = ["dataset", "method", "w", "n_seeds"]
    for metric in metrics:
        columns += [metric, f"{metric}_std"]
    columns += ["n_datasets"] + [c for c in board.columns if c.endswith("_pct")]
    return board[columns].reset_index(drop=True)


def write_leaderboard(leaderboard: pd.DataFrame, path: str | os.PathLike) -> None:
    write_csv(leaderboard, path)


# ----------------------------------------------------------------------------------------------------------------
# Printing


def _format_metric(metric: str, value, std=None) -> str:
    if value is None or not np.isfinite(value):
        return ""
    digits = COLUMNS[metric].digits
    text = f"{value:.{digits}f}"
    if std is not None and np.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def to_markdown(leaderboard: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> str:
    """A compact pipe table: each method's best w and metrics (± std over seeds), and DoG's improvement over CFG
    and over fine-tune only for each FD metric."""
    if metrics is None:
        metrics = [m for m in METRICS if m in leaderboard.columns]
    gains = [(m, b) for m in metrics if m in FRECHET_COLUMNS for b in BASELINES
             if improvement_column(m, b) in leaderboard.columns]
    header = ["dataset", "method", "w"] + list(metrics) + [f"DoG vs {b} ({m})" for m, b in gains]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for _, row in leaderboard.iterrows():
        w = row.get("w")
        cells = [str(row["dataset"]), str(row["method"]), "" if w is None or not np.isfinite(w) else f"{w:g}"]
        cells += [_format_metric(m, row[m], row.get(f"{m}_std")) for m in metrics]
        for m, b in gains:
            value = row[improvement_column(m, b)]
            cells.append(f"{value:+.1f}%" if np.isfinite(value) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
