"""The report of an experiment with several fine-tunes (``finetunes:``, benchmark/harness/finetunes.py).

Each variant gets the block a one-fine-tune experiment of its settings would get: its rows, its w chosen on its own
selection sets, and its paired comparisons within the variant (DoG vs CFG, each vs fine-tune only). Beside them,
each of a later variant's rows is compared with the same method under the same rule in the first variant: both rows
are sampled on the same report seeds, so their sets share the noise and labels of every index, and one bootstrap
draws the same indices for both (``<metric>_diff_vs_finetune`` = this variant - the first, with its interval; the
first variant's name in ``vs_finetune``). An experiment without ``finetunes`` reports exactly as before.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from benchmark.harness.experiment import Experiment
from benchmark.harness.finetunes import variant, variant_names, variants
from benchmark.harness.leaderboard import REAL, SEED_NOISE, Row, Scores, build_leaderboard, planned_rows
from benchmark.harness.leaderboard_md import _signed, to_markdown
from benchmark.harness.protocol import run_values, to_markdown as protocol_markdown, protocol_table
from benchmark.harness.runs import VARIANT
from benchmark.io import atomic_write_text
from benchmark.metrics.intervals import bootstrap_many
from benchmark.metrics.registry import COLUMN_ORDER, COLUMNS, lower_is_better

AGAINST = "vs_finetune"  # the column naming the variant a row is compared with
PROTOCOL_ROWS = ("fine-tune steps", "fine-tune batch", "learning rate", "EMA decay", "fine-tuned weights")


def several(exp: Experiment) -> bool:
    return exp.finetunes is not None


def variant_leaderboard(exp: Experiment, runs: pd.DataFrame, scores: Scores) -> pd.DataFrame:
    """The leaderboard: one variant's as it always was; several variants' blocks, each with a ``finetune`` column
    and (after the first) the comparison with the first variant."""
    if not several(exp):
        return build_leaderboard(exp, runs, scores)
    experiments = variants(exp)
    first = variant_names(exp)[0]
    first_rows = planned_rows(experiments[first], runs[runs[VARIANT] == first])
    blocks = []
    for name, one in experiments.items():
        mine = runs[runs[VARIANT] == name]
        board = build_leaderboard(one, mine, scores)
        if not len(board):
            continue
        if name != first:
            board = _with_comparison(board, _compare(one, first_rows, planned_rows(one, mine), scores), first)
        board[VARIANT] = name
        blocks.append(board)
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()


def _pairs(first_rows: list[Row], rows: list[Row]) -> list[tuple[Row, Row]]:
    """(row, the first variant's row of the same dataset, method and rule) where both hold sets of the same seeds
    and sizes: the pairs whose differences are paired."""
    first = {r.key: r for r in first_rows if r.rule != SEED_NOISE and r.method != REAL}
    pairs = []
    for row in rows:
        other = first.get(row.key)
        if other is not None and [(s, int(r["num_samples"])) for s, r in row.sets] == \
                [(s, int(r["num_samples"])) for s, r in other.sets]:
            pairs.append((row, other))
    return pairs


def _compare(exp: Experiment, first_rows: list[Row], rows: list[Row], scores: Scores) -> dict:
    """{(dataset, method, rule, column): Interval of this variant's value minus the first variant's}."""
    pairs = _pairs(first_rows, rows)
    if not pairs:
        return {}
    metrics = list(exp.evaluation.metrics)
    groups: dict[tuple, int] = {}
    sizes: list[int] = []
    for row, _ in pairs:  # one group per (dataset, report seed): both variants' sets draw the same indices
        for seed, run in row.sets:
            if (row.dataset, seed) not in groups:
                groups[(row.dataset, seed)] = len(sizes)
                sizes.append(int(run["num_samples"]))
    scored = {id(run): scores(run) for pair in pairs for row in pair for _, run in row.sets}

    def mean_values(row: Row, indices) -> dict[str, float]:
        values = [scored[id(run)](None if indices is None else indices[groups[(row.dataset, seed)]], metrics)
                  for seed, run in row.sets]
        return {c: float(np.mean([v[c] for v in values])) for c in values[0]}

    def statistic(indices) -> dict:
        out = {}
        for row, other in pairs:
            mine, theirs = mean_values(row, indices), mean_values(other, indices)
            out.update({(*row.key, c): mine[c] - theirs[c] for c in mine})
        return out
    return bootstrap_many(statistic, sizes, exp.report.bootstrap, seed=0, level=exp.report.level)


def _with_comparison(board: pd.DataFrame, intervals: dict, first: str) -> pd.DataFrame:
    board = board.copy()
    board[AGAINST] = first
    for (dataset, method, rule, c), interval in intervals.items():
        at = (board["dataset"] == dataset) & (board["method"] == method) & (board["rule"] == rule)
        board.loc[at, f"{c}_diff_vs_finetune"] = interval.value
        board.loc[at, f"{c}_diff_vs_finetune_low"] = interval.low
        board.loc[at, f"{c}_diff_vs_finetune_high"] = interval.high
        board.loc[at, f"{c}_significant_vs_finetune"] = interval.excludes_zero
    return board


def variant_markdown(exp: Experiment, board: pd.DataFrame) -> str:
    """leaderboard.md's tables: one, or per variant its block and its comparison with the first variant."""
    if not several(exp):
        return to_markdown(board)
    first = variant_names(exp)[0]
    parts = []
    for name in variant_names(exp):
        block = board[board[VARIANT] == name] if len(board) else board
        if not len(block):
            parts.append(f"## fine-tune {name}\n\n(no report sample sets evaluated yet)")
            continue
        parts.append(f"## fine-tune {name}: {_weights(exp, name)}\n\n{to_markdown(block)}")
        if name != first and any(c.endswith("_diff_vs_finetune") for c in block.columns):
            parts.append(f"### {name} minus {first} (same method and rule, each at its own selected w; paired: same "
                         f"report seeds)\n\n"
                         + _comparison_table(block, first))
    return "\n\n".join(parts)


def _comparison_table(block: pd.DataFrame, first: str) -> str:
    metrics = [c for c in COLUMN_ORDER if f"{c}_diff_vs_finetune" in block.columns]
    header = ["dataset", "method", "rule", "w"] + \
        [f"{c} minus {first} ({'negative' if lower_is_better(c) else 'positive'} = better)" for c in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * len(metrics)) + "|"]
    for _, row in block.iterrows():
        if not np.isfinite(row.get(f"{metrics[0]}_diff_vs_finetune", np.nan)):
            continue
        w = row.get("w")
        cells = [str(row["dataset"]), str(row["method"]), str(row["rule"]), f"{w:g}" if np.isfinite(w) else ""]
        cells += [_signed(row, f"{c}_diff_vs_finetune", COLUMNS[c].digits,
                          significant=bool(row.get(f"{c}_significant_vs_finetune"))) for c in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _weights(exp: Experiment, name: str) -> str:
    adapter = variant(exp, name).finetune.adapter
    return "every weight" if adapter is None else \
        f"LoRA rank {adapter.rank}, alpha {adapter.alpha:g} on {', '.join(adapter.targets)}"


def describe_variants(exp: Experiment) -> str:
    """The leaderboard.md sentence on the variants ("" for one fine-tune)."""
    if not several(exp):
        return ""
    names = variant_names(exp)
    return (f" Fine-tunes compared: {', '.join(names)} (finetunes:), each with its own fine-tune, w selection and "
            f"rows; a later variant's rows are also compared with the same method and rule of {names[0]} on the same "
            f"report seeds (paired).")


def write_variant_protocol(exp: Experiment, path: Path, runs: Optional[pd.DataFrame] = None) -> list[dict]:
    """PROTOCOL.md: the first variant's protocol and, with several, a table of what each variant's fine-tune is."""
    names = variant_names(exp)
    first = variant(exp, names[0])
    text = protocol_markdown(first, runs)
    table = protocol_table(first, runs)
    if several(exp):
        values = {name: run_values(variant(exp, name), runs) for name in names}
        text += (f"\n## Fine-tune variants\n\nThe table above is {names[0]}'s; each variant differs only in its "
                 f"fine-tune (finetunes:), and every variant samples on the same seeds.\n\n"
                 f"| variant | " + " | ".join(PROTOCOL_ROWS) + " |\n|---|" + "---|" * len(PROTOCOL_ROWS) + "\n"
                 + "".join(f"| {name} | " + " | ".join(values[name][r] for r in PROTOCOL_ROWS) + " |\n"
                           for name in names))
        table += [{"setting": f"{r} ({name})", "this run": values[name][r], "paper": "", "DogFit code": ""}
                  for name in names[1:] for r in PROTOCOL_ROWS]
    atomic_write_text(path, text)
    return table
