"""The Optuna search (``dogbench sweep``) over w for one (experiment, dataset, method, metric).

Each trial samples at w and is scored on ``sweep.low_fidelity_samples`` images first; a trial that cannot win
(its low-fidelity score is worse than the best finished trial's by more than ``--prune-margin``) is pruned before
the expensive full-count evaluation. Sample i depends only on (seed, i), so the full evaluation extends the
low-fidelity sample folder instead of starting over.

Trials are selection: they run on the first selection seed, and their rows go to the study's own folder
(results/<experiment>/sweeps/<dataset>-<method>-<metric>/runs.csv), never into the experiment's grid results. The
study's best w is then sampled afresh on the report seeds and scored with intervals; that is the study's leaderboard.

Studies live in SQLite under results/<experiment>/ by default, or in any Optuna storage URL (PostgreSQL/MySQL for
many workers on many machines). A crashed worker's trial goes stale (heartbeat) and is retried; several workers on
one storage share the study.
"""
from __future__ import annotations

import math
import os
import random
import re
import socket
import time
import warnings
from pathlib import Path
from typing import Optional

import optuna
import pandas as pd

from benchmark.guidance import W_DECIMALS
from benchmark.errors import ConfigError, did_you_mean
from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import has_scale_w, run_spec
from benchmark.harness.leaderboard import build_leaderboard, write_leaderboard
from benchmark.harness.leaderboard_md import describe, to_markdown
from benchmark.harness.protocol import write_protocol
from benchmark.harness.run import report_runs, run_row
from benchmark.harness.runs import read_runs, update_runs
from benchmark.harness.selection import chosen
from benchmark.harness.storage import _mask_url
from benchmark.harness.sources import check_recorded_sources
from benchmark.harness.stages import (DatasetContext, claimed, log, sample_folder, scored_sets, stage_evaluate,
                                      stage_finetune, stage_prepare, stage_real_control, stage_sample)
from benchmark.io import atomic_open, atomic_write_text, file_lock
from benchmark.metrics.registry import columns_of, lower_is_better

W_STEP = 0.01  # parameters are searched on a 0.01 grid: finer differences are far below the metrics' noise


def search_space(exp: Experiment, label: str) -> dict[str, tuple[float, float]]:
    """Parameter -> (low, high) searched for one method: the span of its grid's values (w: sweep.w_range when set,
    else the span of the experiment's w grid). A method with no parameter to search is a one-line error."""
    entry = exp.entry(label)
    space = {name: (min(values), max(values)) for name, values in entry.grid.items()}
    if not space and has_scale_w(entry) and "w" not in entry.params:
        space = {"w": exp.sweep_w_range()}
    if not space:
        raise ConfigError(f"method {label} has no parameter to search; give it a grid, e.g. "
                          f"{{name: {entry.name}, grid: {{w: [1.0, 3.0]}}}}")
    return space


def metric_direction(metric: str) -> str:
    return "minimize" if lower_is_better(metric) else "maximize"


def study_name(exp: Experiment, dataset: str, method: str, metric: str) -> str:
    return f"{exp.name}/{dataset}/{method}/{metric}"


class CannotWinPruner:
    """Prune a trial whose intermediate (low-fidelity) value is worse than the best value that finished trials
    reported at the same step, by more than ``margin`` (relative). Needs ``n_startup_trials`` finished trials."""

    def __new__(cls, margin: float = 0.05, n_startup_trials: int = 2):
        class _Pruner(optuna.pruners.BasePruner):
            def prune(self, study, trial) -> bool:
                step = trial.last_step
                if step is None:
                    return False
                value = trial.intermediate_values[step]
                finished = [t.intermediate_values.get(step) for t in
                            study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
                finished = [v for v in finished if v is not None and math.isfinite(v)]
                if len(finished) < n_startup_trials:
                    return False
                if study.direction == optuna.study.StudyDirection.MINIMIZE:
                    return value > min(finished) * (1 + margin)
                return value < max(finished) * (1 - margin)

        return _Pruner()


def with_retries(make, attempts: int = 5):
    """Workers that start together race to create the storage schema and the study; the loser retries."""
    for attempt in range(attempts):
        try:
            return make()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())


def _retry_stale_trials(max_retry: int) -> dict:
    """RDBStorage's argument that re-queues a trial whose worker died (its heartbeat went stale): named
    heartbeat_stale_trial_callback since Optuna 4.9, failed_trial_callback (deprecated there) before."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry is not None:
        with warnings.catch_warnings():  # "experimental", and the replacement Optuna's deprecation notice names
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return {"heartbeat_stale_trial_callback": retry(max_retry=max_retry)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}


def open_study(exp: Experiment, dataset: str, method: str, metric: str, storage_url: Optional[str] = None,
               results_root=None, heartbeat_s: Optional[int] = None, worker: int = 0):
    """The study, created on first use. ``worker`` (0, 1, ...) is mixed into the sampler's seed so that parallel
    workers propose different points while each stays reproducible. ``heartbeat_s``: default sweep.heartbeat_s.
    TPE is multivariate, so a 2-D space such as cfg+dog's (w_cfg, w_dog) is modelled jointly."""
    url = storage_url or exp.sweep_storage(results_root)
    heartbeat_s = heartbeat_s or exp.sweep.heartbeat_s
    try:
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        storage = with_retries(lambda: optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
            **_retry_stale_trials(max_retry=2),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None))
    except Exception as e:  # noqa: BLE001 - sqlalchemy, optuna and OS errors alike: the URL is the user's to fix
        reason = str(getattr(e, "orig", None) or getattr(e, "strerror", None) or e).strip().splitlines()
        raise ConfigError(f"cannot open the sweep storage {_mask_url(url)} ({reason[0] if reason else type(e).__name__})"
                          f"; pass --storage (or set sweep.storage) to a URL you can write to, e.g. "
                          f"sqlite:////writable/dir/sweep.db, or null for a file in the results folder") from None
    seed = exp.sweep.seed + 1000 * worker
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=exp.sweep.seed),  # one shared sequence: workers take turns
        "grid": lambda: optuna.samplers.GridSampler(grid_space(exp, method), seed=seed),
    }[exp.sweep.sampler]()
    return with_retries(lambda: optuna.create_study(
        study_name=study_name(exp, dataset, method, metric), storage=storage, sampler=sampler,
        pruner=CannotWinPruner(), direction=metric_direction(metric), load_if_exists=True))


def study_dir(exp: Experiment, dataset: str, method: str, metric: str, results_root=None) -> Path:
    """A study's own folder: its runs table, leaderboard and PROTOCOL.md never mix with the grid's."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", method)
    return exp.results_dir(results_root) / "sweeps" / f"{dataset}-{slug}-{metric}"


def dashboard_hint(url: str) -> str:
    return f"optuna-dashboard {url}   (pip install optuna-dashboard, or pip install -e '.[dashboard]' in the checkout)"


def run_sweep(exp: Experiment, dataset: str, method: str, metric: str, more_trials: Optional[int] = None,
              total_trials: Optional[int] = None, storage_url: Optional[str] = None, device: str = "cpu",
              results_root=None, progress: bool = True, prune_margin: float = 0.05, worker: int = 0) -> dict:
    """Trials on the first selection seed (low-fidelity first, pruned when they cannot win), then the best w
    re-scored on the report seeds; everything goes to the study's own folder (``study_dir``).

    ``more_trials``: run this many more trials (Optuna's n_trials); ``total_trials``: run until the study holds
    this many finished trials (default: sweep.trials). Several workers on one storage share the study."""
    labels = [e.key for e in exp.method_entries()]
    if method not in labels:
        raise ConfigError(f"--method {method!r} is not one of the experiment's methods{did_you_mean(method, labels)} "
                          f"({', '.join(labels)})")
    space = search_space(exp, method)
    columns = columns_of(exp.evaluation.metrics)
    if metric not in columns:
        raise ValueError(f"--metric {metric!r} is not produced by evaluation.metrics={exp.evaluation.metrics}; "
                         f"choose one of {', '.join(columns)}")
    results_dir = exp.results_dir(results_root)
    out = study_dir(exp, dataset, method, metric, results_root)
    ctx = DatasetContext(exp, dataset, results_dir, device, progress)
    results_dir.mkdir(parents=True, exist_ok=True)
    check_recorded_sources(exp, results_dir, say=log)
    url = storage_url or exp.sweep_storage(results_root)
    # the storage is opened before any work: a URL it cannot use is one line, not an error after the fine-tune
    study = open_study(exp, dataset, method, metric, url, results_root, worker=worker)
    stage_prepare(ctx)
    stage_finetune(ctx)
    study.pruner = CannotWinPruner(margin=prune_margin)
    full = exp.selection_num_samples()
    low = min(exp.sweep_num_samples(), full)
    seed = exp.selection.seeds[0]
    log(f"study {study.study_name} in {url}; watch it with: {dashboard_hint(url)}")

    def objective(trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it, e.g. to find a dead one
        values = {name: round(trial.suggest_float(name, lo, hi, step=W_STEP), W_DECIMALS)
                  for name, (lo, hi) in space.items()}
        spec = run_spec(dataset, method, exp.method_spec(method, values), seed)
        folder, result = sampled_and_scored(ctx, spec, low)
        value = result["metrics"][metric]
        trial.report(value, low)
        if low < full:
            if trial.should_prune():
                raise optuna.TrialPruned(f"{spec.spec.describe()}: {metric}={value:.3f} on {low} images cannot win")
            folder, result = sampled_and_scored(ctx, spec, full)
        row = run_row(ctx, spec, result, full, "selection", folder.root)
        update_runs(out / "runs.csv", [{**row, "study": study.study_name}])
        return result["metrics"][metric]

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    if more_trials is None:
        total = total_trials or exp.sweep.trials
        more = total - done
        callbacks = [optuna.study.MaxTrialsCallback(total, states=done_states)]
        if more <= 0:
            log(f"study {study.study_name} already holds {done} finished trials (total {total}); "
                f"pass --trials N to run N more")
    else:
        more, callbacks = more_trials, []
    if more > 0:
        ranges = ", ".join(f"{name} in [{lo:g}, {hi:g}]" for name, (lo, hi) in space.items())
        log(f"study {study.study_name}: {more} more trial(s), {ranges} on a {W_STEP} grid, "
            f"{low} -> {full} images on selection seed {seed}")
        study.optimize(objective, n_trials=more, callbacks=callbacks)
    settle_trials(study, objective, exp.sweep.heartbeat_s)
    summary = sweep_summary(study, dataset, method, metric)
    write_sweep_summary(out.parent / "summary.csv", summary)
    if summary["best_value"] is None:
        return summary
    log(f"study {study.study_name}: best {summary['best_params']} ({metric}={summary['best_value']:.4g} on "
        f"selection seed {seed}); re-scoring it on report seeds {exp.report.seeds}")
    summary["leaderboard"] = rescore_best(exp, ctx, study, method, metric, out)
    return summary


def settle_trials(study, objective, heartbeat_s: int) -> None:
    """Leave no trial RUNNING or WAITING. A killed worker's trial stays RUNNING until its heartbeat is older than the
    grace period; then fail_stale_trials fails it and the storage's retry callback enqueues its w again
    (WAITING), which is run here. So a worker whose budget is spent waits for the other workers' running trials
    (finished by them, or stale) before it leaves, and a rerun of a finished study cleans up after a crash."""
    unfinished = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    told = False
    while True:
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False, states=unfinished)]
        if optuna.trial.TrialState.WAITING in states:
            study.optimize(objective, n_trials=1)  # ask() takes a waiting trial first
        elif states:
            if not told:
                log(f"study {study.study_name}: waiting for {len(states)} trial(s) running elsewhere (one whose worker "
                    f"died is retried once its heartbeat is {2 * heartbeat_s} s old)")
                told = True
            time.sleep(min(heartbeat_s, 2))  # a cheap query; a worker leaves soon after the others' trials end
        else:
            return


def grid_space(exp: Experiment, label: str) -> dict[str, list[float]]:
    """The grid sampler's space: the method's grid (w: the experiment's w_grid)."""
    entry = exp.entry(label)
    return dict(entry.grid) or {"w": exp.w_values()}


def sweep_experiment(exp: Experiment, method: str, metric: str, trial_points: list[dict]) -> Experiment:
    """The experiment as the study saw it: fine-tune only and the searched method with the trials' values as its
    grid, selected by the study's metric."""
    entry = exp.entry(method)
    names = sorted({name for p in trial_points for name in p})
    grid = {name: sorted({p[name] for p in trial_points}) for name in names}
    searched = entry.model_copy(update={"grid": grid, "label": entry.key})
    study_exp = exp.replaced(methods=["none", searched.to_dict()],
                             evaluation={**exp.evaluation.to_dict(), "select_by": metric},
                             report={**exp.report.to_dict(), "fixed_w": []})
    study_exp._path = exp.path
    return study_exp


def sampled_and_scored(ctx: DatasetContext, spec, n: int):
    """(sample folder, evaluation result) of the first ``n`` images of a sample set, under its claim: several sweep
    workers may reach the same set (fine-tune only, a w two trials share, the report sets), and only one samples it
    while the others wait and then find it finished."""
    with claimed(sample_folder(ctx, spec, n).root, f"samples {spec.spec.describe()} seed {spec.seed}"):
        folder = stage_sample(ctx, spec, n)
        return folder, stage_evaluate(ctx, spec, folder, n)


def rescore_best(exp: Experiment, ctx: DatasetContext, study, method: str, metric: str, out: Path) -> str:
    """Sample the study's best w (and fine-tune only) on the report seeds, score them, and write the study's
    leaderboard (report seeds only, with intervals), its runs.csv and PROTOCOL.md into ``out``."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    study_exp = sweep_experiment(exp, method, metric,
                                 [{k: round(v, W_DECIMALS) for k, v in t.params.items()} for t in trials])
    runs = read_runs(out / "runs.csv")
    selection = runs[(runs["phase"] == "selection") & (runs["dataset"] == ctx.dataset)]
    choice = chosen(selection, metric, study_exp.unguided_methods())
    rows = []
    for spec, phase in report_runs(study_exp, ctx.dataset, choice):
        folder, result = sampled_and_scored(ctx, spec, exp.sampling.num_samples)
        rows.append({**run_row(ctx, spec, result, exp.sampling.num_samples, phase, folder.root),
                     "study": study.study_name})
    if exp.report.controls:
        n = exp.sampling.num_samples
        result, root = stage_real_control(ctx, n, exp.report.seeds[0])
        rows.append(run_row(ctx, None, result, n, "control", root, seed=exp.report.seeds[0]))
    runs = update_runs(out / "runs.csv", rows)
    board = build_leaderboard(study_exp, runs[runs["dataset"] == ctx.dataset],
                              scored_sets(study_exp, ctx.results_dir, ctx.cache_root))
    write_leaderboard(board, out / "leaderboard.csv")
    markdown = to_markdown(board)
    atomic_write_text(out / "leaderboard.md", f"# study {study.study_name}\n\n{describe(study_exp, board)}\n\n"
                                              f"{markdown}\n")
    write_protocol(study_exp, out / "PROTOCOL.md", runs)
    return markdown


def sweep_summary(study, dataset: str, method: str, metric: str) -> dict:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    try:
        best = study.best_trial
        best_params = {k: round(v, W_DECIMALS) for k, v in best.params.items()}
        best_value = best.value
    except ValueError:  # no finished trial yet
        best_params, best_value = {}, None
    return {"study": study.study_name, "dataset": dataset, "method": method, "metric": metric,
            "best_w": best_params.get("w"), "best_params": " ".join(f"{k}={v:g}" for k, v in best_params.items()),
            "best_value": best_value,
            "n_complete": states.count(optuna.trial.TrialState.COMPLETE),
            "n_pruned": states.count(optuna.trial.TrialState.PRUNED),
            "n_failed": states.count(optuna.trial.TrialState.FAIL)}


def write_sweep_summary(path, summary: dict) -> None:
    """sweeps/summary.csv: one row per study (replaced when the study is summarised again)."""
    with file_lock(path):
        try:
            df = pd.read_csv(path)
            df = df[df["study"] != summary["study"]]
        except FileNotFoundError:
            df = pd.DataFrame()
        df = pd.concat([df, pd.DataFrame([summary])], ignore_index=True)
        with atomic_open(path, "w") as f:
            df.to_csv(f, index=False)
