"""The Optuna search (``dogbench sweep``) over w for one (experiment, dataset, method, metric).

Each trial samples at w and is scored on ``sweep.low_fidelity_samples`` images first; a trial that cannot win
(its low-fidelity score is worse than the best finished trial's by more than ``--prune-margin``) is pruned before
the expensive full-count evaluation. Sample i depends only on (seed, i), so the full evaluation extends the
low-fidelity sample folder instead of starting over.

Studies live in SQLite under results/<experiment>/ by default, or in any Optuna storage URL (PostgreSQL/MySQL for
many workers on many machines). A crashed worker's trial goes stale (heartbeat) and is retried; several workers on
one storage share the trial budget (``--trials`` counts finished + pruned trials of the whole study).
"""
from __future__ import annotations

import math
import os
import random
import socket
import time
from pathlib import Path
from typing import Optional

import optuna
import pandas as pd

from benchmark.guidance import W_DECIMALS
from benchmark.harness.experiment import Experiment, RunSpec
from benchmark.harness.leaderboard import is_lower_better, update_runs
from benchmark.harness.run import run_row
from benchmark.harness.stages import DatasetContext, log, stage_evaluate, stage_finetune, stage_prepare, stage_sample
from benchmark.io import atomic_open, file_lock
from benchmark.metrics.registry import columns_of

SWEEP_METHODS = ("cfg", "dog")
W_STEP = 0.01  # w is searched on a 0.01 grid: finer differences are far below the metrics' noise


def metric_direction(metric: str) -> str:
    return "minimize" if is_lower_better(metric) else "maximize"


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


def open_study(exp: Experiment, dataset: str, method: str, metric: str, storage_url: Optional[str] = None,
               results_root=None, heartbeat_s: Optional[int] = None, worker: int = 0):
    """The study, created on first use. ``worker`` (0, 1, ...) is mixed into the sampler's seed so that parallel
    workers propose different w while each stays reproducible. ``heartbeat_s``: default sweep.heartbeat_s."""
    url = storage_url or exp.sweep_storage(results_root)
    heartbeat_s = heartbeat_s or exp.sweep.heartbeat_s
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    storage = with_retries(lambda: optuna.storages.RDBStorage(
        url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
        failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None))
    seed = exp.sweep.seed + 1000 * worker
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=exp.sweep.seed),  # one shared sequence: workers take turns
        "grid": lambda: optuna.samplers.GridSampler({"w": exp.w_values()}, seed=seed),
    }[exp.sweep.sampler]()
    return with_retries(lambda: optuna.create_study(
        study_name=study_name(exp, dataset, method, metric), storage=storage, sampler=sampler,
        pruner=CannotWinPruner(), direction=metric_direction(metric), load_if_exists=True))


def run_sweep(exp: Experiment, dataset: str, method: str, metric: str, trials: Optional[int] = None,
              storage_url: Optional[str] = None, device: str = "cpu", results_root=None, progress: bool = True,
              prune_margin: float = 0.05, worker: int = 0) -> dict:
    if method not in SWEEP_METHODS:
        raise ValueError(f"--method {method!r} has no w to search; choose cfg or dog")
    columns = columns_of(exp.evaluation.metrics)
    if metric not in columns:
        raise ValueError(f"--metric {metric!r} is not produced by evaluation.metrics={exp.evaluation.metrics}; "
                         f"choose one of {', '.join(columns)}")
    trials = trials or exp.sweep.trials
    results_dir = exp.results_dir(results_root)
    ctx = DatasetContext(exp, dataset, results_dir, device, progress)
    stage_prepare(ctx)
    stage_finetune(ctx)
    study = open_study(exp, dataset, method, metric, storage_url, results_root, worker=worker)
    study.pruner = CannotWinPruner(margin=prune_margin)
    low, full = exp.sweep_num_samples(), exp.sampling.num_samples
    lo, hi = exp.sweep_w_range()
    seed = exp.seeds[0]

    def objective(trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it, e.g. to find a dead one
        w = round(trial.suggest_float("w", lo, hi, step=W_STEP), W_DECIMALS)
        spec = RunSpec(dataset, method if w != 1.0 else "none", w, seed)
        folder = stage_sample(ctx, spec, low)
        value = stage_evaluate(ctx, spec, folder, low)["metrics"][metric]
        trial.report(value, low)
        if low < full:
            if trial.should_prune():
                raise optuna.TrialPruned(f"w={w}: {metric}={value:.3f} on {low} images cannot win")
            folder = stage_sample(ctx, spec, full)
            result = stage_evaluate(ctx, spec, folder, full)
            value = result["metrics"][metric]
        else:
            result = stage_evaluate(ctx, spec, folder, full)
        update_runs(results_dir / "runs.csv", [{**run_row(ctx, spec, result, full), "study": study.study_name}])
        return value

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = trials - len(study.get_trials(deepcopy=False, states=done_states))
    if remaining > 0:
        log(f"study {study.study_name}: {remaining} more trial(s), w in [{lo}, {hi}], {low} -> {full} images")
        study.optimize(objective, n_trials=remaining,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=done_states)])
    settle_trials(study, objective, exp.sweep.heartbeat_s)
    summary = sweep_summary(study, dataset, method, metric)
    write_sweep_summary(results_dir / "sweeps.csv", summary)
    log(f"study {study.study_name}: best w={summary['best_w']} {metric}={summary['best_value']}")
    return summary


def settle_trials(study, objective, heartbeat_s: int) -> None:
    """Leave no trial RUNNING or WAITING. A killed worker's trial stays RUNNING until its heartbeat is older than the
    grace period; then fail_stale_trials fails it and the storage's RetryFailedTrialCallback enqueues its w again
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


def sweep_summary(study, dataset: str, method: str, metric: str) -> dict:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    try:
        best = study.best_trial
        best_w, best_value = best.params["w"], best.value
    except ValueError:  # no finished trial yet
        best_w = best_value = None
    return {"study": study.study_name, "dataset": dataset, "method": method, "metric": metric,
            "best_w": best_w, "best_value": best_value,
            "n_complete": states.count(optuna.trial.TrialState.COMPLETE),
            "n_pruned": states.count(optuna.trial.TrialState.PRUNED),
            "n_failed": states.count(optuna.trial.TrialState.FAIL)}


def write_sweep_summary(path, summary: dict) -> None:
    """sweeps.csv: one row per study (replaced when the study is summarised again)."""
    with file_lock(path):
        try:
            df = pd.read_csv(path)
            df = df[df["study"] != summary["study"]]
        except FileNotFoundError:
            df = pd.DataFrame()
        df = pd.concat([df, pd.DataFrame([summary])], ignore_index=True)
        with atomic_open(path, "w") as f:
            df.to_csv(f, index=False)
