"""The leaderboard: every method at its selected parameters (and at the protocol's fixed w), scored on report seeds
only, with a bootstrap interval on every number and paired intervals on each method's differences.

Rows, per dataset: ``none`` (fine-tune only), each method at the parameters chosen on the selection seeds (rule
``best w``), each method with a scale w at each ``report.fixed_w`` (rule ``w=1.5``), then the controls: ``real`` (as
many real target images as a sample set, scored like one: the floor a generator could reach at this sample count)
and ``seed noise`` (fine-tune only under two seeds, compared like two methods: the smallest difference the benchmark
resolves at this size). Then ``average`` rows over the datasets that have every row (each metric averaged over
them, and compared as such), and ``paper summary`` rows: the paper's headline, each method's relative improvement per
dataset averaged over those datasets, with a bootstrap interval over datasets and samples (the datasets are drawn
with replacement in each resample as well as the sample indices within each).

Numbers: a metric is the mean over report seeds of its value on each seed's sample set. Intervals come from one
bootstrap over sample indices (``benchmark.metrics.intervals``): within a dataset and report seed every method's set
is resampled with the same indices (the methods share noise and labels per index, so their differences are paired),
different seeds and datasets independently, reference statistics held fixed. A difference is marked significant when
its interval excludes 0. On the rows of every guided method (DoG first of all; CFG against none only), for every
column of the metric card (benchmark.metrics.card: Frechet distances, PRDC, KID, class KID, Vendi, copy rate):
``diff_vs_B`` = method - B with its interval (B = cfg under the same rule, and none); for each Frechet distance also
the paper's relative improvement ``improvement_vs_B_pct`` = (B - method) / B * 100 (a ratio of a biased distance is
the paper's headline; of a KID near 0 or a rate it would mean little). The real-data row has no copy rate (registry.
NOT_ON_REAL_IMAGES), and a rate's interval is clipped to [0, 1] (registry.BOUNDS). On ``best w`` rows,
``<metric>_selection`` is the value on the selection seeds at the chosen w and ``<metric>_gap`` the report value
minus it: how optimistic the selection score was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from benchmark.guidance import MethodSpec, resolve_method
from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import UNGUIDED, has_scale_w, params_text, spec_w
from benchmark.harness.runs import runs_frame, write_csv
from benchmark.harness.selection import chosen, select_best
from benchmark.metrics.card import SampleSetCard
from benchmark.metrics.intervals import bootstrap_many
from benchmark.metrics.registry import COLUMN_ORDER, COLUMNS, METRICS, NOT_ON_REAL_IMAGES

AVERAGE = "average"
SUMMARY = "paper summary"
BASELINES = ("cfg", "none")
BEST = "best w"
CONTROL = "control"
SEED_NOISE = "seed noise"
REAL = "real"

# A number of the table: (dataset, method, rule, column, statistic), statistic one of VALUE, NOISE_DIFF,
# ("diff", baseline), ("improvement", baseline)
VALUE, NOISE_DIFF = "value", "diff"
Key = tuple
Scores = Callable[[Mapping], SampleSetCard]  # a runs.csv row -> the metric card of its sample set


@dataclass
class Row:
    """One leaderboard row: a method at one parameter setting under one rule, with its sample set per report seed."""

    dataset: str
    method: str
    rule: str
    w: float
    params: str = ""
    sets: list = field(default_factory=list)  # (seed, runs.csv row) per report seed, in seed order

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.method, self.rule)


def fixed_rule(w: float) -> str:
    return f"w={w:g}"


UNGUIDED_SPEC = resolve_method("none")


def report_plan(exp: Experiment, dataset: str, chosen: dict) -> list[tuple[str, str, MethodSpec]]:
    """(method label, rule, spec) of the leaderboard rows of ``dataset``, from each method's selected parameters
    ``chosen[(dataset, label)] = (w, params)``; a fixed-w row is the method's own spec at that w (its interval,
    APG numbers and other parameters kept)."""
    plan = [(UNGUIDED, "baseline", UNGUIDED_SPEC)]
    for entry in (e for e in exp.method_entries() if e.key != UNGUIDED):
        if (dataset, entry.key) in chosen:
            w, params = chosen[(dataset, entry.key)]
            point = next((s for s in exp.grid(entry.key) if (spec_w(s) == w or math.isnan(w) and math.isnan(spec_w(s)))
                          and params_text(s) == params), None)
            if point is not None:
                plan.append((entry.key, BEST, point))
        if has_scale_w(entry):
            plan += [(entry.key, fixed_rule(w), exp.method_spec(entry.key, {"w": w})) for w in exp.report.fixed_w]
    return plan


def noise_seeds(exp: Experiment) -> tuple[int, int]:
    """The two seeds of the seed-noise row: the first two report seeds, or the first and one more seed that no
    other list uses."""
    seeds = exp.report.seeds
    return (seeds[0], seeds[1]) if len(seeds) > 1 else (seeds[0], max(seeds + exp.selection.seeds) + 1)


def _find(frame: pd.DataFrame, dataset: str, method: str, w: float, params: str, seed: int):
    same_w = frame["w"].isna() if math.isnan(w) else frame["w"] == round(w, 4)
    hit = frame[(frame["dataset"] == dataset) & (frame["method"] == method) & same_w
                & (frame["params"] == params) & (frame["seed"] == seed)]
    return hit.iloc[0] if len(hit) else None


def _plan_rows(exp: Experiment, report: pd.DataFrame, control: pd.DataFrame, choice: dict) -> list[Row]:
    """Every row with all its report sets: the planned rows of each dataset, then its controls."""
    rows: list[Row] = []
    for dataset in exp.dataset_names():
        for method, rule, spec in report_plan(exp, dataset, choice):
            sample_method = method if spec.guided else UNGUIDED  # an unguided point is the fine-tune-only set
            row = Row(dataset, method, rule, spec_w(spec), params_text(spec))
            for seed in exp.report.seeds:
                run = _find(report, dataset, sample_method, row.w, row.params, seed)
                if run is not None:
                    row.sets.append((seed, run))
            if len(row.sets) == len(exp.report.seeds):
                rows.append(row)
        if exp.report.controls:
            real = control[(control["dataset"] == dataset) & (control["method"] == REAL)]
            if len(real):
                rows.append(Row(dataset, REAL, CONTROL, math.nan, "", [(exp.report.seeds[0], real.iloc[0])]))
            a, b = noise_seeds(exp)
            first = _find(report, dataset, UNGUIDED, 1.0, "", a)
            second = _find(pd.concat([report, control]), dataset, UNGUIDED, 1.0, "", b)
            if first is not None and second is not None:
                rows.append(Row(dataset, UNGUIDED, SEED_NOISE, 1.0, "", [(a, first), (a, second)]))
    return rows


def _group(row: Row, seed) -> tuple:
    """The bootstrap group of a row's set: one per (dataset, report seed), and one for each dataset's real images."""
    return (row.dataset, REAL) if row.method == REAL else (row.dataset, seed)


def _relative(baseline: float, value: float) -> float:
    return (baseline - value) / baseline * 100.0 if baseline else math.nan


class _Statistic:
    """Every number of the table as a function of one bootstrap draw (None: all samples), keyed by ``Key``."""

    def __init__(self, exp: Experiment, rows: list[Row], scores: Scores, complete: list[str]):
        self.metrics, self.rows, self.complete = list(exp.evaluation.metrics), rows, complete
        self.real_metrics = [m for m in self.metrics if METRICS[m].kind not in NOT_ON_REAL_IMAGES]
        # the summaries' draws of datasets: a generator of their own, so the sample-index draws (and with them every
        # other interval) are what they are without the summaries
        self.datasets = np.random.default_rng(0)
        self.groups: dict[tuple, int] = {}
        self.sizes: list[int] = []
        for row in rows:
            for seed, run in row.sets:
                if _group(row, seed) not in self.groups:
                    self.groups[_group(row, seed)] = len(self.sizes)
                    self.sizes.append(int(run["num_samples"]))
        self.scored = {id(run): scores(run) for row in rows for _, run in row.sets}

    def _values(self, row: Row, seed, run, indices) -> dict[str, float]:
        index = None if indices is None else indices[self.groups[_group(row, seed)]]
        return self.scored[id(run)](index, self.real_metrics if row.method == REAL else self.metrics)

    def __call__(self, indices) -> dict[Key, float]:
        out: dict[Key, float] = {}
        per_row: dict[tuple, dict[str, float]] = {}
        for row in self.rows:
            if row.rule == SEED_NOISE:  # the second set is paired with the first (same draw)
                (a, first), (_, second) = row.sets
                va, vb = self._values(row, a, first, indices), self._values(row, a, second, indices)
                out.update({(*row.key, c, VALUE): va[c] for c in va})
                out.update({(*row.key, c, NOISE_DIFF): vb[c] - va[c] for c in va})
                continue
            values = [self._values(row, seed, run, indices) for seed, run in row.sets]
            per_row[row.key] = {c: float(np.mean([v[c] for v in values])) for c in values[0]}
        per_row.update(self._averages(per_row))
        for key, values in per_row.items():
            out.update({(*key, c, VALUE): v for c, v in values.items()})
        out.update(self._comparisons(per_row))
        out.update(self._summaries(out, indices))
        return out

    def _summaries(self, out: dict, indices) -> dict[Key, float]:
        """The paper's headline: each row's relative improvement per dataset, averaged over the datasets that have
        every row (drawn with replacement in a bootstrap resample)."""
        if len(self.complete) < 2:
            return {}
        drawn = self.complete if indices is None else \
            [self.complete[i] for i in self.datasets.integers(0, len(self.complete), len(self.complete))]
        summaries = {}
        for (dataset, method, rule, c, statistic) in out:
            if dataset == self.complete[0] and isinstance(statistic, tuple) and statistic[0] == "improvement":
                per_dataset = [out[(d, method, rule, c, statistic)] for d in drawn]
                summaries[(SUMMARY, method, rule, c, statistic)] = float(np.mean(per_dataset))
        return summaries

    def _averages(self, per_row: dict) -> dict[tuple, dict[str, float]]:
        """Each (method, rule) averaged over the datasets that have every row."""
        grouped: dict[tuple, list] = {}
        for (dataset, method, rule), values in per_row.items():
            if dataset in self.complete and method != REAL:
                grouped.setdefault((method, rule), []).append(values)
        return {(AVERAGE, method, rule): {c: float(np.mean([v[c] for v in values])) for c in values[0]}
                for (method, rule), values in grouped.items()}

    def _comparisons(self, per_row: dict) -> dict[Key, float]:
        """Each guided row against CFG under the same rule and against fine-tune only (CFG: only against fine-tune
        only): the difference per column, and the paper's relative improvement per Frechet distance."""
        out: dict[Key, float] = {}
        for (dataset, method, rule), values in per_row.items():
            if method in (UNGUIDED, REAL):
                continue
            for baseline in (b for b in BASELINES if b != method):
                base = per_row.get((dataset, baseline, rule if baseline == "cfg" else "baseline"))
                if base is None:
                    continue
                for c in values:
                    out[(dataset, method, rule, c, ("diff", baseline))] = values[c] - base[c]
                    if COLUMNS[c].frechet:
                        out[(dataset, method, rule, c, ("improvement", baseline))] = _relative(base[c], values[c])
        return out


def planned_rows(exp: Experiment, runs: pd.DataFrame) -> list[Row]:
    """The leaderboard's rows (each with its report sets) that the runs rows complete."""
    runs = runs_frame(runs)
    report = runs[runs["phase"] == "report"]
    if not len(report):
        return []
    choice = chosen(runs[runs["phase"] == "selection"], exp.evaluation.select_by, exp.unguided_methods())
    return _plan_rows(exp, report, runs[runs["phase"] == "control"], choice)


def build_leaderboard(exp: Experiment, runs: pd.DataFrame, scores: Scores) -> pd.DataFrame:
    """The leaderboard table from the current runs rows (see the module docstring); ``scores`` gives the scored
    sample set of a runs row (``benchmark.harness.stages.scored_sets``: the features its evaluation cached)."""
    runs = runs_frame(runs)
    selection = runs[runs["phase"] == "selection"]
    shared = exp.unguided_methods()
    rows = planned_rows(exp, runs)
    if not rows:
        return pd.DataFrame()
    first = {(r.method, r.rule) for r in rows if r.dataset == exp.dataset_names()[0]}
    complete = [d for d in exp.dataset_names() if {(r.method, r.rule) for r in rows if r.dataset == d} == first]
    statistic = _Statistic(exp, rows, scores, complete)
    intervals = bootstrap_many(statistic, statistic.sizes, exp.report.bootstrap, seed=0, level=exp.report.level)
    return _table(exp, rows, intervals, select_best(selection, exp.evaluation.select_by, shared), complete)


def _table(exp, rows: list[Row], intervals: dict, selection_best: pd.DataFrame, complete: list[str]) -> pd.DataFrame:
    columns = [c for c in COLUMN_ORDER if any(c in METRICS[m].columns for m in exp.evaluation.metrics)]
    n_samples = {row.key: int(row.sets[0][1]["num_samples"]) for row in rows}
    keys = [(r.dataset, r.method, r.rule, r.w, r.params, len(r.sets), n_samples[r.key]) for r in rows]
    if len(complete) > 1:
        for name in (AVERAGE, SUMMARY):
            keys += [(name, r.method, r.rule, math.nan, "", len(r.sets), n_samples[r.key]) for r in rows
                     if r.dataset == complete[0] and r.method != REAL and r.rule != SEED_NOISE
                     and (name == AVERAGE or r.method != UNGUIDED)]
    records = []
    for dataset, method, rule, w, params, n_seeds, n in keys:
        record = {"dataset": dataset, "method": method, "rule": rule, "w": w, "params": params, "n_seeds": n_seeds,
                  "n_samples": n, "n_datasets": len(complete) if dataset in (AVERAGE, SUMMARY) else None}
        for c in columns:
            record.update(_cells(intervals, (dataset, method, rule), c, selection_best))
        records.append(record)
    board = pd.DataFrame(records)
    for count in ("n_seeds", "n_samples", "n_datasets"):
        board[count] = board[count].astype("Int64")
    return board


def _within_bounds(interval, bounds):
    """A value's interval clipped to the values it can take (the bias-centred percentile interval can reach past a
    rate's 0 or 1)."""
    if bounds is None:
        return interval
    low, high = bounds
    return replace(interval, low=min(max(interval.low, low), high), high=min(max(interval.high, low), high))


def _interval_cells(name: str, interval) -> dict:
    return {name: interval.value, f"{name}_low": interval.low, f"{name}_high": interval.high}


def _cells(intervals: dict, row: tuple, c: str, selection_best: pd.DataFrame) -> dict:
    """The cells of column ``c`` in the row ``(dataset, method, rule)``: its value and interval, the seed-noise
    difference, the selection score and gap, the differences against each baseline."""
    dataset, method, rule = row
    if dataset == SUMMARY:
        return _summary_cells(intervals, row, c)
    value = intervals.get((*row, c, VALUE))
    if value is None:
        return {}
    record = _interval_cells(c, _within_bounds(value, COLUMNS[c].bounds))
    if rule == SEED_NOISE:
        record.update(_interval_cells(f"{c}_diff", intervals[(*row, c, NOISE_DIFF)]))
    if rule == BEST and dataset != AVERAGE:
        picked = selection_best[(selection_best["dataset"] == dataset) & (selection_best["method"] == method)]
        if len(picked) and c in picked.columns:
            record[f"{c}_selection"] = float(picked.iloc[0][c])
            record[f"{c}_gap"] = value.value - record[f"{c}_selection"]
    for baseline in BASELINES:
        diff = intervals.get((*row, c, ("diff", baseline)))
        if diff is None:
            continue
        record.update(_interval_cells(f"{c}_diff_vs_{baseline}", diff))
        improvement = intervals.get((*row, c, ("improvement", baseline)))
        if improvement is not None:
            record.update(_interval_cells(f"{c}_improvement_vs_{baseline}_pct", improvement))
        record[f"{c}_significant_vs_{baseline}"] = diff.excludes_zero
    return record


def _summary_cells(intervals: dict, row: tuple, c: str) -> dict:
    """A summary row's cells: the mean over datasets of each relative improvement, marked significant when its
    interval (over datasets and samples) excludes 0."""
    record = {}
    for baseline in BASELINES:
        gain = intervals.get((*row, c, ("improvement", baseline)))
        if gain is not None:
            record.update(_interval_cells(f"{c}_improvement_vs_{baseline}_pct", gain))
            record[f"{c}_significant_vs_{baseline}"] = gain.excludes_zero
    return record


def write_leaderboard(board: pd.DataFrame, path) -> None:
    write_csv(board, path)
