"""The leaderboard as text: the pipe table of leaderboard.md and the sentence above it. Every comparison says in its
header which sign is better."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from benchmark.harness.experiment import Experiment
from benchmark.harness.leaderboard import AVERAGE, BASELINES, SEED_NOISE, SUMMARY
from benchmark.metrics.registry import COLUMN_ORDER, COLUMNS, lower_is_better


def _cell(column: str, row, suffix: str = "") -> str:
    value = row.get(f"{column}{suffix}")
    if value is None or not np.isfinite(value):
        return ""
    digits = COLUMNS[column].digits
    low, high = row.get(f"{column}{suffix}_low"), row.get(f"{column}{suffix}_high")
    text = f"{value:.{digits}f}"
    if low is not None and np.isfinite(low):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def _signed(row, name: str, digits: int, unit: str = "", significant: Optional[bool] = None) -> str:
    """``+1.2 [+0.3, +2.0] *``: a signed value with its interval (* = significant)."""
    value = row.get(name)
    if value is None or not np.isfinite(value):
        return ""
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    mark = " *" if significant is True else ""
    return f"{value:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"


BASELINE_NAMES = {"cfg": "CFG", "none": "fine-tune only"}


def comparison_headers(column: str, baseline: str) -> tuple[str, ...]:
    """The headers of a column's comparisons with ``baseline``, each saying which sign is better: the signed
    difference (method - baseline), and for a Frechet distance the paper's relative improvement beside it."""
    name, better = BASELINE_NAMES[baseline], "negative" if lower_is_better(column) else "positive"
    diff = f"{column} minus {name} ({better} = better)"
    return (diff, f"improvement over {name}, % ({column}; positive = better)") if COLUMNS[column].frechet else (diff,)


def to_markdown(board: pd.DataFrame, metrics: Optional[list] = None) -> str:
    """A pipe table: each row's value [interval] per metric; per metric column and baseline (CFG, fine-tune only)
    the signed difference [interval], and for a Frechet distance beside it the paper's relative improvement
    [interval], each header saying which sign is better (* = the interval excludes 0); for best-w rows the selection
    score."""
    if metrics is None:
        metrics = [c for c in COLUMN_ORDER if c in board.columns]
    frechet = [m for m in metrics if COLUMNS[m].frechet]
    header = ["dataset", "method", "rule", "w"] + list(metrics) + \
        [h for m in metrics for b in BASELINES for h in comparison_headers(m, b)] + \
        [f"{m} on selection seeds" for m in frechet[:1]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|"]
    for _, row in board.iterrows():
        w, params = row.get("w"), row.get("params")
        setting = " ".join(x for x in ("" if w is None or not np.isfinite(w) else f"{w:g}",
                                       params if isinstance(params, str) else "") if x)
        cells = [str(row["dataset"]), str(row["method"]), str(row["rule"]), setting]
        if row["rule"] == SEED_NOISE:
            cells += [f"diff {_cell(m, row, '_diff')}" for m in metrics]
        else:
            cells += [_cell(m, row) for m in metrics]
        for m, b in ((m, b) for m in metrics for b in BASELINES):
            significant = row.get(f"{m}_significant_vs_{b}")
            cells.append(_signed(row, f"{m}_diff_vs_{b}", COLUMNS[m].digits, significant=significant))
            if COLUMNS[m].frechet:
                cells.append(_signed(row, f"{m}_improvement_vs_{b}_pct", 1, "%", significant))
        cells += [_cell(m, row, "_selection") for m in frechet[:1]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(exp: Experiment, board: pd.DataFrame) -> str:
    """The header sentence of leaderboard.md: how w was chosen and what the numbers are."""
    n_sel = exp.selection_num_samples()
    level = f"{exp.report.level:.0%}"
    return (f"Each method's parameters chosen by the best mean {exp.evaluation.select_by} on selection seeds "
            f"{exp.selection.seeds} ({n_sel} images each; w in {exp.w_values()} unless a method lists its own grid); "
            f"every number is from fresh samples "
            f"on report seeds {exp.report.seeds} ({exp.sampling.num_samples} images each): the mean over report "
            f"seeds with its {level} bootstrap interval ({exp.report.bootstrap} resamples of sample indices, "
            f"reference statistics fixed). Differences are paired (same noise and labels per index); * marks "
            f"a difference whose {level} interval excludes 0. Every column is compared with CFG (same rule) and with "
            f"fine-tune only, each header saying which sign is better: the signed difference (method - baseline; on a "
            f"Frechet distance negative = better), and for a Frechet distance beside it the paper's relative "
            f"improvement ((baseline - method) / baseline x 100; positive = better). Fixed-w rows: {exp.report.fixed_w or 'none'}."
            + (f" '{AVERAGE}' rows: each metric averaged over the {n} datasets with every row; '{SUMMARY}' rows: the "
               f"paper's headline, the relative improvement per dataset averaged over those datasets, its interval "
               f"over datasets and samples." if (n := _n_datasets(board)) > 1 else ""))


def _n_datasets(board: pd.DataFrame) -> int:
    counts = board["n_datasets"].dropna() if len(board) and "n_datasets" in board else []
    return int(counts.max()) if len(counts) else 0
