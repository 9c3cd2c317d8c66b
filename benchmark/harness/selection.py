"""Choosing each method's setting on the selection samples (and only there).

Per dataset and method, the parameters (w, and the ``params`` of other methods) whose mean ``select_by`` over the
selection seeds is best (lowest for a Frechet distance, highest for precision / recall / density / coverage; ties:
the smaller w). The unguided point is shared: CFG and DoG at w = 1 (and any method's grid point with every scale at
its unguided value) are the ``none`` set, so where that point is on a method's grid it competes for the method.
"""
from __future__ import annotations

from typing import Iterable, Union

import pandas as pd

from benchmark.harness.runs import Rows, _sort, present_metrics, runs_frame
from benchmark.metrics.registry import lower_is_better


Shared = Union[bool, Iterable[str]]  # True: cfg and dog share the none set; or the methods that do


def with_shared_w1(rows: Rows, shared: Shared = True) -> pd.DataFrame:
    """Add, for each ``none`` row, copies under each sharing method (True: cfg and dog) present on that dataset and
    not already measured there unguided: the same samples, so the same metrics."""
    df = runs_frame(rows)
    sharing = ("cfg", "dog") if shared is True else () if shared is False else tuple(shared)
    copies = []
    for dataset, group in df.groupby("dataset", sort=False):
        guided = [m for m in sharing if m in set(group["method"]) and m != "none"]
        measured = set(zip(group["method"], group["w"], group["params"], group["seed"]))
        for _, row in group[group["method"] == "none"].iterrows():
            for method in guided:
                if (method, 1.0, "", row["seed"]) not in measured:
                    copies.append({**row.to_dict(), "method": method})
    return _sort(pd.concat([df, runs_frame(copies)], ignore_index=True)) if copies else df


def aggregate_seeds(rows: Rows, shared_w1: Shared = True) -> pd.DataFrame:
    """One row per dataset x method x (w, params): the mean of each metric over seeds, its std (sample std,
    ddof=1; empty with one seed) as ``<metric>_std``, and ``n_seeds``."""
    df = with_shared_w1(rows, shared_w1) if shared_w1 is not False else runs_frame(rows)
    metrics = present_metrics(df)
    grouped = df.groupby(["dataset", "method", "w", "params"], sort=False, dropna=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for metric in metrics:
        out[metric] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return _sort(out.reset_index())


def select_best(rows: Rows, select_by: str = "fid", shared_w1: Shared = True) -> pd.DataFrame:
    """Per dataset x method, the parameters whose mean ``select_by`` is best (ties: the smaller w)."""
    agg = aggregate_seeds(rows, shared_w1=shared_w1)
    if select_by not in agg.columns:
        raise ValueError(f"select_by={select_by!r} has no values in the runs; choose one of {', '.join(present_metrics(agg)) or '(none)'}")
    agg = agg[agg[select_by].notna()]
    ascending = lower_is_better(select_by)
    ranked = agg.sort_values([select_by, "w", "params"], ascending=[ascending, True, True], kind="stable")
    best = ranked.groupby(["dataset", "method"], sort=False).head(1)
    return _sort(best)


def chosen_w(selection_rows: Rows, select_by: str, shared_w1: Shared = True) -> dict[tuple[str, str], float]:
    """{(dataset, method): the selected w} from the selection-phase rows (methods with a scale w)."""
    return {key: w for key, (w, _) in chosen(selection_rows, select_by, shared_w1).items()}


def chosen(selection_rows: Rows, select_by: str, shared: Shared = True) -> dict[tuple[str, str], tuple[float, str]]:
    """{(dataset, method): (the selected w, the selected params)} from the selection-phase rows."""
    best = select_best(selection_rows, select_by, shared)
    return {(row.dataset, row.method): (float(row.w), str(row.params)) for row in best.itertuples()}
