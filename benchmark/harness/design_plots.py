"""The figures of compute and of a factorised design, drawn from the leaderboard (its report rows and intervals):

- ``plots/pareto_<dataset>.png``: the selection metric of every reported generator row against its model forwards
  per image (nfe), with the 95% interval: what a method buys for its compute. Always drawn.
- ``plots/design_<dataset>.png``: with a ``design``, a negative x rule heat map of the paired difference against CFG
  (each cell at the schedule whose best-w row scores best), ``*`` where the interval excludes 0; with
  ``report.fixed_w``, one more per fixed w (``design_<dataset>_w2.png``: every cell and CFG at w = 2).

With several fine-tune variants each gets its own figures (``_<variant>`` in the name).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.harness.methods import Design
from benchmark.harness.plots import method_style, save_figure
from benchmark.harness.runs import VARIANT
from benchmark.metrics.registry import lower_is_better

GENERATOR_RULES = ("baseline", "best w")  # leaderboard rows of one generator, besides the fixed-w ones ("w=1.5")


def _generator_rows(block: pd.DataFrame) -> pd.DataFrame:
    rule = block["rule"].astype(str)
    return block[(rule.isin(GENERATOR_RULES) | rule.str.startswith("w=")) & block["nfe"].notna()]


def plot_pareto(block: pd.DataFrame, metric: str, path: Path, title: str) -> Optional[Path]:
    rows = _generator_rows(block)
    if not len(rows) or metric not in rows.columns:
        return None
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    methods = list(dict.fromkeys(rows["method"]))
    for method in methods:
        mine = rows[rows["method"] == method]
        label, color = method_style(method, methods)
        low = (mine[metric] - mine[f"{metric}_low"]).clip(lower=0)
        high = (mine[f"{metric}_high"] - mine[metric]).clip(lower=0)
        ax.errorbar(mine["nfe"], mine[metric], yerr=[low, high], fmt="o", color=color, label=label, capsize=3)
        for _, row in mine.iterrows():  # the scale beside each point: "w=1.5", or the chosen one's
            w = pd.to_numeric(row["w"], errors="coerce")
            note = str(row["rule"]) if str(row["rule"]).startswith("w=") or not np.isfinite(w) else f"w={w:g}"
            ax.annotate(note, (row["nfe"], row[metric]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("model forwards per image (nfe)")
    better = "lower" if lower_is_better(metric) else "higher"
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _best_schedule(cells: pd.DataFrame, metric: str) -> pd.Series:
    ordered = cells.sort_values(metric, ascending=lower_is_better(metric))
    return ordered.iloc[0]


def plot_design(block: pd.DataFrame, design: Design, metric: str, path: Path, title: str,
                rule: str = "best w") -> Optional[Path]:
    """negative x rule: each cell's row of one leaderboard rule ("best w", or a fixed "w=2") minus CFG's row of the
    same rule, at the cell's best schedule."""
    diff = f"{metric}_diff_vs_cfg"
    rows = block[(block["rule"] == rule) & (block["design_negative"].astype(str) != "")]
    if not len(rows) or diff not in rows.columns:
        return None
    negatives, rules = list(dict.fromkeys(design.negative)), list(dict.fromkeys(c.rule for c in design.cells()))
    values = np.full((len(negatives), len(rules)), np.nan)
    notes = [["" for _ in rules] for _ in negatives]
    for (negative, rule), cells in rows.groupby(["design_negative", "design_rule"]):
        if negative not in negatives or rule not in rules:
            continue
        best = _best_schedule(cells, metric)
        i, j = negatives.index(negative), rules.index(rule)
        if pd.notna(best.get(diff)):
            values[i, j] = best[diff]
            star = " *" if bool(best.get(f"{metric}_significant_vs_cfg")) else ""
            notes[i][j] = f"{best[diff]:+.2f}{star}\n@{best['design_schedule']}"
        else:
            notes[i][j] = f"{best[metric]:.2f}\n(no CFG row)"
    fig = Figure(figsize=(1.9 * len(rules) + 2.2, 0.9 * len(negatives) + 1.6))
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if len(finite) else 1.0
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    # red = worse than CFG, blue = better, whichever way the metric points
    signed = values if lower_is_better(metric) else -values
    image = ax.imshow(signed, cmap="coolwarm", vmin=-scale, vmax=scale, aspect="auto")
    for i in range(len(negatives)):
        for j in range(len(rules)):
            ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(rules)), rules)
    ax.set_yticks(range(len(negatives)), negatives)
    ax.set_xlabel("combination rule")
    ax.set_ylabel("negative")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=f"{metric} minus CFG (blue = better)")
    return save_figure(fig, path)


def design_figures(design: Optional[Design], board: pd.DataFrame, metric: str, out_dir: Path) -> dict[str, Path]:
    """{figure label: path} of every dataset (and fine-tune variant) of the leaderboard."""
    figures: dict[str, Path] = {}
    if not len(board) or "nfe" not in board.columns:
        return figures
    variants = board[VARIANT] if VARIANT in board.columns else pd.Series([""] * len(board), index=board.index)
    for (dataset, variant), block in board.groupby([board["dataset"], variants], sort=False):
        if dataset in ("average", "paper summary"):
            continue
        suffix = f"{dataset}_{variant}" if variant else str(dataset)
        where = f"{dataset}{f', fine-tune {variant}' if variant else ''}"
        pareto = plot_pareto(block, metric, out_dir / f"pareto_{suffix}.png",
                             f"{where}: {metric} vs compute (report rows, 95% intervals)")
        if pareto:
            figures[f"pareto_{suffix}"] = pareto
        if design is None:
            continue
        # the chosen w of each cell, then each fixed w: where selection keeps every cell unguided (w = 1), the
        # fixed-w map is the one that compares guided cells
        fixed = sorted({r for r in block["rule"].astype(str) if r.startswith("w=")}, key=lambda r: float(r[2:]))
        for rule in ["best w", *fixed]:
            name = f"design_{suffix}" if rule == "best w" else f"design_{suffix}_{rule.replace('=', '')}"
            what = "best w of each cell minus CFG at its best w" if rule == "best w" else \
                f"each cell at {rule} minus CFG at {rule}"
            heat = plot_design(block, design, metric, out_dir / f"{name}.png",
                               f"{where}: {what} ({metric}; * = interval excludes 0)", rule)
            if heat:
                figures[name] = heat
    return figures
