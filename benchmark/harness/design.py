"""An experiment's factorised guidance design (issue 19): which negative x which combination rule x which schedule.

    design: {negative: [cfg, dog, icg], rule: [linear, apg, cfg-zero-star], schedule: [constant, interval]}

expands (``Design`` in benchmark/harness/methods.py, through benchmark.guidance.design, the layer that owns the
axes) into one method entry per cell, appended
to ``methods`` and labelled ``<negative>+<rule>@<schedule>`` (``dog+apg@interval``). A cell is an entry like any
other: its w (and ``grid``'s other parameters) are chosen on the selection seeds and its report rows carry
intervals, and a cell with the same spec as a plain entry shares its samples. runs.csv and the leaderboard get the
axes as columns (``design_negative``, ``design_rule``, ``design_schedule``) so a table can be pivoted, and beside
them what each row cost (``nfe``, FLOPs and measured seconds per image: benchmark/harness/runs.py).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from benchmark.harness.methods import UNGUIDED, Design
from benchmark.harness.runs import COMPUTE_COLUMNS, DESIGN_COLUMNS, VARIANT


def design_axes(design: Optional[Design], label: str) -> dict[str, str]:
    """The axis columns of method ``label``: its cell's axes, or empty for a method outside the design."""
    cell = next((c for c in design.cells() if c.label == label), None) if design is not None else None
    return {} if cell is None else {f"design_{axis}": value for axis, value in cell.axes().items()}


def with_design_and_compute(design: Optional[Design], board: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with each row's design axes and the compute of the report sets behind it (nfe and FLOPs per
    image; seconds per image averaged over its report seeds). Rows of no single generator (averages, controls):
    empty."""
    if not len(board):
        return board
    had_variant, board = VARIANT in board.columns, board.copy()
    report = runs[runs["phase"] == "report"].copy()
    keys = ["dataset", "method", "w", "params", VARIANT]
    for frame in (board, report):
        if VARIANT not in frame.columns:
            frame[VARIANT] = ""
        frame["w"] = pd.to_numeric(frame["w"], errors="coerce").round(4)
        frame["params"] = frame["params"].fillna("").astype(str)
    numeric = [c for c in COMPUTE_COLUMNS if c != "sampling_device"]
    for c in numeric:
        report[c] = pd.to_numeric(report.get(c), errors="coerce")
    cost = report.groupby(keys, dropna=False).agg(
        {**{c: "mean" for c in numeric}, "sampling_device": lambda s: "; ".join(sorted(set(s.dropna().astype(str))))})
    # a method's unguided point (w = 1) was sampled as the one fine-tune-only set: its cost is that set's
    unguided = board["w"].eq(1.0) & board["params"].eq("")
    lookup = board.assign(method=board["method"].where(~unguided, UNGUIDED))
    merged = lookup.drop(columns=[c for c in COMPUTE_COLUMNS if c in board.columns]).merge(
        cost.reset_index(), on=keys, how="left")
    merged["method"] = board["method"].to_numpy()
    for column in DESIGN_COLUMNS:
        merged[column] = [design_axes(design, m).get(column, "") for m in merged["method"]]
    if not had_variant:
        merged = merged.drop(columns=[VARIANT])
    merged["sampling_device"] = merged["sampling_device"].replace({np.nan: ""})
    return merged
