"""The leaderboard: every method at its selected parameters (and at the protocol's fixed w), scored on report seeds
only, with a bootstrap interval on every number and paired intervals on each method's differences.

Rows, per dataset: ``none`` (fine-tune only), each method at the parameters chosen on the selection seeds (rule
``best w``), each method with a scale w at each ``report.fixed_w`` (rule ``w=1.5``), then the controls: ``real`` (as
many real target images as a sample set, scored like one: the floor a generator could reach at this sample count)
and ``seed noise`` (fine-tune only under two seeds, compared like two methods: the smallest difference the benchmark
resolves at this size). Then ``average`` rows over the datasets that have every row.

Numbers: a metric is the mean over report seeds of its value on each seed's sample set. Intervals come from one
bootstrap over sample indices (``benchmark.metrics.intervals``): within a dataset and report seed every method's set
is resampled with the same indices (the methods share noise and labels per index, so their differences are paired),
different seeds and datasets independently, reference statistics held fixed. A difference is marked significant when
its interval excludes 0. On the rows of every guided method (DoG first of all; CFG against none only), for each
Frechet distance: ``diff_vs_B`` = method - B and the paper's relative improvement ``improvement_vs_B_pct`` = (B -
method) / B * 100, each with its interval (B = cfg under the same rule, and none). On ``best w`` rows,
``<metric>_selection`` is the value on the selection seeds at the chosen w and ``<metric>_gap`` the report value
minus it: how optimistic the selection score was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from benchmark.guidance import INTERVAL, MethodSpec, resolve_method
from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import UNGUIDED, has_scale_w, params_text, spec_w
from benchmark.harness.runs import runs_frame, write_csv
from benchmark.harness.selection import chosen, select_best
from benchmark.io import read_json
from benchmark.metrics.evaluate import load_sample_features
from benchmark.metrics.intervals import FrechetResampler, PRDCResampler, bootstrap_many, reference_root
from benchmark.metrics.reference import load_reference
from benchmark.metrics.registry import COLUMN_ORDER, COLUMNS, METRICS, PRDC_KEYS

AVERAGE = "average"
BASELINES = ("cfg", "none")
BEST = "best w"
CONTROL = "control"


@dataclass
class Row:
    """One leaderboard row: a method at one parameter setting under one rule, with its sample set per report seed."""

    dataset: str
    method: str
    rule: str
    w: float
    params: str = ""
    sets: list = field(default_factory=list)  # one runs.csv row (a pandas Series) per report seed, in seed order


def fixed_rule(w: float) -> str:
    return f"w={w:g}"


UNGUIDED_SPEC = resolve_method("none")


def report_plan(exp: Experiment, dataset: str, chosen: dict) -> list[tuple[str, str, MethodSpec]]:
    """(method label, rule, spec) of the leaderboard rows of ``dataset``, from each method's selected parameters
    ``chosen[(dataset, label)] = (w, params)``."""
    plan = [(UNGUIDED, "baseline", UNGUIDED_SPEC)]
    for entry in (e for e in exp.method_entries() if e.key != UNGUIDED):
        if (dataset, entry.key) in chosen:
            w, params = chosen[(dataset, entry.key)]
            point = next((s for s in exp.grid(entry.key) if (spec_w(s) == w or math.isnan(w) and math.isnan(spec_w(s)))
                          and params_text(s) == params), None)
            if point is not None:
                plan.append((entry.key, BEST, point))
        if has_scale_w(entry):
            base = {**entry.params, INTERVAL: exp.sampling.guidance_interval} if entry.method().guides else entry.params
            plan += [(entry.key, fixed_rule(w), resolve_method(entry.name, {**base, "w": w})) for w in exp.report.fixed_w]
    return plan


def noise_seeds(exp: Experiment) -> tuple[int, int]:
    """The two seeds of the seed-noise row: the first two report seeds, or the first and one more seed that no
    other list uses."""
    seeds = exp.report.seeds
    return (seeds[0], seeds[1]) if len(seeds) > 1 else (seeds[0], max(seeds + exp.selection.seeds) + 1)


class _Sets:
    """Features and reference statistics of the report sample sets, loaded once, as resamplers."""

    def __init__(self, results_dir: Path, cache_root: Path):
        self.results_dir, self.cache_root = results_dir, cache_root
        self._frechet, self._prdc, self._reference, self._roots, self._radii = {}, {}, {}, {}, {}

    def _result(self, run) -> dict:
        folder = self.results_dir / str(run["sample_dir"])
        n = int(run["num_samples"])
        found = [r["metrics"] for p in sorted(folder.glob("metrics-*.json")) if (r := read_json(p))
                 and r.get("key", {}).get("num_samples") == n]
        if not found:
            raise FileNotFoundError(f"no metrics of {n} images in {folder}; rerun `dogbench run` to evaluate it")
        return found[-1] | {"folder": folder}

    def reference(self, run, space: str):
        result = self._result(run)
        path = self.cache_root / "reference" / result["reference"][space]
        if path not in self._reference:
            self._reference[path] = load_reference(path)
            self._roots[path] = reference_root(self._reference[path].sigma)
        return self._reference[path], self._roots[path], path

    def frechet(self, run, space: str) -> FrechetResampler:
        key = (str(run["sample_dir"]), int(run["num_samples"]), space)
        if key not in self._frechet:
            result = self._result(run)
            ref, root, _ = self.reference(run, space)
            features = load_sample_features(result["folder"] / result["features"][space])
            self._frechet[key] = FrechetResampler(features, ref.mu, ref.sigma, ref_root=root)
        return self._frechet[key]

    def prdc(self, run, space: str) -> PRDCResampler:
        key = (str(run["sample_dir"]), int(run["num_samples"]), space)
        if key not in self._prdc:
            result = self._result(run)
            ref, _, path = self.reference(run, space)
            fake = load_sample_features(result["folder"] / result["features"][space])
            # the real k-NN radii depend on the reference alone: computed once per reference
            self._prdc[key] = PRDCResampler(ref.prdc_features, fake, real_radii=self._radii.get(path))
            self._radii[path] = self._prdc[key].real_radii
        return self._prdc[key]


def _metric_values(sets: _Sets, run, metrics: list[str], index) -> dict[str, float]:
    """Every metric column of one sample set (resampled by ``index``)."""
    out = {}
    for name in metrics:
        metric = METRICS[name]
        if metric.kind == "fd":
            out[name] = sets.frechet(run, metric.space)(index)
        else:
            values = sets.prdc(run, metric.space)(index)
            out.update(zip(metric.columns, (values[k] for k in PRDC_KEYS)))
    return out


def _seed_mean(sets: _Sets, row: Row, metrics: list[str], groups: dict, indices) -> dict[str, float]:
    values = [_metric_values(sets, run, metrics, None if indices is None else indices[groups[(row.dataset, seed)]])
              for seed, run in row.sets]
    return {c: float(np.mean([v[c] for v in values])) for c in values[0]}


def _relative(baseline: float, value: float) -> float:
    return (baseline - value) / baseline * 100.0 if baseline else math.nan


def build_leaderboard(exp: Experiment, runs: pd.DataFrame, results_dir: Path, cache_root: Path) -> pd.DataFrame:
    """The leaderboard table from the current runs rows (see the module docstring)."""
    metrics = list(exp.evaluation.metrics)
    runs = runs_frame(runs)
    selection = runs[runs["phase"] == "selection"]
    report = runs[runs["phase"] == "report"]
    control = runs[runs["phase"] == "control"]
    if not len(report):
        return pd.DataFrame()
    shared = exp.unguided_methods()
    choice = chosen(selection, exp.evaluation.select_by, shared)
    selection_best = select_best(selection, exp.evaluation.select_by, shared)

    def find(frame, dataset, method, w, params, seed):
        same_w = frame["w"].isna() if math.isnan(w) else frame["w"] == round(w, 4)
        hit = frame[(frame["dataset"] == dataset) & (frame["method"] == method) & same_w
                    & (frame["params"] == params) & (frame["seed"] == seed)]
        return hit.iloc[0] if len(hit) else None

    rows: list[Row] = []
    for dataset in exp.dataset_names():
        for method, rule, spec in report_plan(exp, dataset, choice):
            sample_method = method if spec.guided else UNGUIDED  # an unguided point is the fine-tune-only set
            row = Row(dataset, method, rule, spec_w(spec), params_text(spec))
            for seed in exp.report.seeds:
                run = find(report, dataset, sample_method, row.w, row.params, seed)
                if run is not None:
                    row.sets.append((seed, run))
            if len(row.sets) == len(exp.report.seeds):
                rows.append(row)
        if exp.report.controls:
            real = control[(control["dataset"] == dataset) & (control["method"] == "real")]
            if len(real):
                rows.append(Row(dataset, "real", CONTROL, math.nan, "", [(exp.report.seeds[0], real.iloc[0])]))
            a, b = noise_seeds(exp)
            first = find(report, dataset, UNGUIDED, 1.0, "", a)
            second = find(pd.concat([report, control]), dataset, UNGUIDED, 1.0, "", b)
            if first is not None and second is not None:
                rows.append(Row(dataset, UNGUIDED, "seed noise", 1.0, "", [(a, first), (a, second)]))
    if not rows:
        return pd.DataFrame()

    # one bootstrap group per (dataset, report seed) and for the real images of each dataset
    groups, sizes = {}, []
    for row in rows:
        for seed, run in row.sets:
            key = (row.dataset, seed) if row.method != "real" else (row.dataset, "real")
            if key not in groups:
                groups[key] = len(sizes)
                sizes.append(int(run["num_samples"]))
    sets = _Sets(results_dir, cache_root)
    frechet = [m for m in COLUMN_ORDER if m in metrics and COLUMNS[m].frechet]
    complete = [d for d in exp.dataset_names() if {(r.method, r.rule) for r in rows if r.dataset == d}
                == {(r.method, r.rule) for r in rows if r.dataset == exp.dataset_names()[0]}]

    def statistic(indices) -> dict[str, float]:
        out: dict[str, float] = {}
        per_row = {}
        for row in rows:
            if row.rule == "seed noise":
                (a, first), (_, second) = row.sets
                index = None if indices is None else indices[groups[(row.dataset, a)]]
                va, vb = (_metric_values(sets, run, metrics, index) for run in (first, second))
                for c in va:
                    out[f"{row.dataset}|none|seed noise|{c}"] = va[c]
                    out[f"{row.dataset}|none|seed noise|{c}|diff"] = vb[c] - va[c]
                continue
            if row.method == "real":
                index = None if indices is None else indices[groups[(row.dataset, "real")]]
                values = _metric_values(sets, row.sets[0][1], metrics, index)
            else:
                values = _seed_mean(sets, row, metrics, groups, indices)
            per_row[(row.dataset, row.method, row.rule)] = values
            out.update({f"{row.dataset}|{row.method}|{row.rule}|{c}": v for c, v in values.items()})
        averages = {}
        for (dataset, method, rule), values in per_row.items():
            if dataset in complete and method != "real":
                averages.setdefault((method, rule), []).append(values)
        for (method, rule), value_list in averages.items():
            mean = {c: float(np.mean([v[c] for v in value_list])) for c in value_list[0]}
            per_row[(AVERAGE, method, rule)] = mean
            out.update({f"{AVERAGE}|{method}|{rule}|{c}": v for c, v in mean.items()})
        for (dataset, method, rule), values in per_row.items():
            if method in (UNGUIDED, "real"):
                continue
            for baseline in BASELINES:
                if baseline == method:  # CFG is compared with fine-tune only: does guidance help at all
                    continue
                base = per_row.get((dataset, baseline, rule if baseline == "cfg" else "baseline"))
                if base is None:
                    continue
                for c in frechet:
                    out[f"{dataset}|{method}|{rule}|{c}|diff_vs_{baseline}"] = values[c] - base[c]
                    out[f"{dataset}|{method}|{rule}|{c}|improvement_vs_{baseline}_pct"] = _relative(base[c], values[c])
        return out

    intervals = bootstrap_many(statistic, sizes, exp.report.bootstrap, seed=0, level=exp.report.level)
    return _table(exp, rows, intervals, selection_best, complete)


def _table(exp, rows, intervals, selection_best, complete) -> pd.DataFrame:
    columns = [c for c in COLUMN_ORDER if any(c in METRICS[m].columns for m in exp.evaluation.metrics)]
    records = []
    keys = [(r.dataset, r.method, r.rule, r.w, r.params, len(r.sets), int(r.sets[0][1]["num_samples"])) for r in rows]
    average_rows = [(AVERAGE, r.method, r.rule, math.nan, "", len(r.sets), int(r.sets[0][1]["num_samples"]))
                    for r in rows if r.dataset == complete[0] and r.method != "real" and r.rule != "seed noise"] \
        if len(complete) > 1 else []
    for dataset, method, rule, w, params, n_seeds, n in keys + average_rows:
        record = {"dataset": dataset, "method": method, "rule": rule, "w": w, "params": params, "n_seeds": n_seeds,
                  "n_samples": n, "n_datasets": len(complete) if dataset == AVERAGE else None}
        prefix = f"{dataset}|{method}|{rule}"
        for c in columns:
            interval = intervals.get(f"{prefix}|{c}")
            if interval is None:
                continue
            record.update({c: interval.value, f"{c}_low": interval.low, f"{c}_high": interval.high})
            if rule == "seed noise":
                diff = intervals[f"{prefix}|{c}|diff"]
                record.update({f"{c}_diff": diff.value, f"{c}_diff_low": diff.low, f"{c}_diff_high": diff.high})
            if rule == BEST and dataset != AVERAGE:
                picked = selection_best[(selection_best["dataset"] == dataset) & (selection_best["method"] == method)]
                if len(picked) and c in picked.columns:
                    record[f"{c}_selection"] = float(picked.iloc[0][c])
                    record[f"{c}_gap"] = interval.value - record[f"{c}_selection"]
            for baseline in BASELINES:
                diff = intervals.get(f"{prefix}|{c}|diff_vs_{baseline}")
                if diff is None:
                    continue
                rel = intervals[f"{prefix}|{c}|improvement_vs_{baseline}_pct"]
                record.update({f"{c}_diff_vs_{baseline}": diff.value, f"{c}_diff_vs_{baseline}_low": diff.low,
                               f"{c}_diff_vs_{baseline}_high": diff.high,
                               f"{c}_improvement_vs_{baseline}_pct": rel.value,
                               f"{c}_improvement_vs_{baseline}_pct_low": rel.low,
                               f"{c}_improvement_vs_{baseline}_pct_high": rel.high,
                               f"{c}_significant_vs_{baseline}": diff.excludes_zero})
        records.append(record)
    board = pd.DataFrame(records)
    for count in ("n_seeds", "n_samples", "n_datasets"):
        board[count] = board[count].astype("Int64")
    return board


def write_leaderboard(board: pd.DataFrame, path) -> None:
    write_csv(board, path)


# ----------------------------------------------------------------------------------------------------------------
# Printing


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


def _gain(row, column: str, baseline: str) -> str:
    value = row.get(f"{column}_improvement_vs_{baseline}_pct")
    if value is None or not np.isfinite(value):
        return ""
    low, high = row[f"{column}_improvement_vs_{baseline}_pct_low"], row[f"{column}_improvement_vs_{baseline}_pct_high"]
    mark = " *" if row.get(f"{column}_significant_vs_{baseline}") is True else ""
    return f"{value:+.1f}% [{low:+.1f}, {high:+.1f}]{mark}"


def to_markdown(board: pd.DataFrame, metrics: Optional[list] = None) -> str:
    """A pipe table: each row's value [interval] per metric, each method's relative improvement over CFG and over
    fine-tune only [interval] (* = the paired difference's interval excludes 0), and for best-w rows the selection
    score."""
    if metrics is None:
        metrics = [c for c in COLUMN_ORDER if c in board.columns]
    frechet = [m for m in metrics if COLUMNS[m].frechet]
    header = ["dataset", "method", "rule", "w"] + list(metrics) + \
        [f"vs {b} ({m})" for m in frechet for b in BASELINES] + [f"{m} on selection seeds" for m in frechet[:1]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|"]
    for _, row in board.iterrows():
        w, params = row.get("w"), row.get("params")
        setting = " ".join(x for x in ("" if w is None or not np.isfinite(w) else f"{w:g}",
                                       params if isinstance(params, str) else "") if x)
        cells = [str(row["dataset"]), str(row["method"]), str(row["rule"]), setting]
        if row["rule"] == "seed noise":
            cells += [f"diff {_cell(m, row, '_diff')}" for m in metrics]
        else:
            cells += [_cell(m, row) for m in metrics]
        cells += [_gain(row, m, b) for m in frechet for b in BASELINES]
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
            f"a difference whose {level} interval excludes 0. Fixed-w rows: {exp.report.fixed_w or 'none'}.")
