"""Weights & Biases logging of a benchmark run. It is a record, never a requirement: any W&B failure is one
warning line, after which the tracker does nothing and the run goes on.

One W&B run per evaluated (dataset, method, w): group ``<experiment>/<dataset>``, job type = the method, name
``<dataset>-<method>-w<w>``, with the resolved experiment config, the metrics and the sample grid. One more run,
``<experiment>-leaderboard`` (job type ``leaderboard``), holds the leaderboard and the runs as tables, metric-vs-w
line charts per dataset and the PNG figures.

The mode follows ``benchmark.tracking.resolve_mode``. Offline runs are written to
``results/<experiment>/wandb/offline-run-*``; upload them later with ``wandb sync results/<experiment>/wandb/offline-run-*``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import wandb

from benchmark.errors import first_line
from benchmark.harness.runs import present_metrics
from benchmark.harness.selection import aggregate_seeds
from benchmark.io import config_hash
from benchmark.tracking import warn

def run_name(dataset: str, method: str, w: float, seed: Optional[int] = None) -> str:
    name = f"{dataset}-{method}-w{float(w):g}"
    return name if seed is None else f"{name}-s{seed}"


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """One Python type per column (float for numbers, str otherwise) and None for NaN/NA: wandb.Table infers a
    column's type from its first row and rejects a later row of another type (e.g. an int after a float, which a
    runs table merged from CSV rows and fresh rows can hold)."""
    out = pd.DataFrame(index=df.index)
    for column in df.columns:
        values = df[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().sum() and numeric.notna().sum() == values.notna().sum():
            cells = [None if pd.isna(v) else float(v) for v in numeric]
        else:
            cells = [None if pd.isna(v) else str(v) for v in values]
        out[column] = pd.Series(cells, index=df.index, dtype=object)
    return out


class NullTracker:
    """The tracker when W&B is disabled: every call does nothing."""

    enabled = False
    mode = "disabled"
    directory: Optional[Path] = None

    def log_run(self, dataset: str, method: str, w: float, metrics: Mapping[str, Any], seed: Optional[int] = None,
                config: Optional[Mapping[str, Any]] = None, images: Optional[Mapping[str, str | os.PathLike]] = None) -> None:
        pass

    def log_summary(self, leaderboard: pd.DataFrame, runs: Optional[pd.DataFrame] = None,
                    figures: Optional[Mapping[str, str | os.PathLike]] = None,
                    protocol: Optional[list] = None) -> None:
        pass

    def finish(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()
        return False


class WandbTracker(NullTracker):
    """Logs to W&B, one short-lived W&B run per call (see the module docstring)."""

    def __init__(self, experiment: str, config: Mapping[str, Any], project: str = "dogbench",
                 entity: Optional[str] = None, mode: str = "offline", directory: str | os.PathLike = "."):
        self.experiment = experiment
        self.config = dict(config)
        self.project, self.entity, self.mode = project, entity, mode
        # wandb.init(dir=D) writes under D/wandb/, so D is the experiment's results directory
        self.directory = Path(directory)
        self.enabled = True
        self.logged = 0
        self._config_hash = config_hash(self.config)

    def _log(self, what: str, data_fn, **init_kwargs) -> None:
        """Start a W&B run, log ``data_fn(wandb)``, finish. Any failure disables the tracker with one warning."""
        if not self.enabled:
            return
        run = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # a stable id per (config, run name): a resumed harness that logs the same point again updates it
            run_id = config_hash({"config": self._config_hash, "name": init_kwargs["name"]}, length=16)
            config = init_kwargs.pop("config", self.config)
            run = wandb.init(
                project=self.project, entity=self.entity, mode=self.mode, dir=str(self.directory), id=run_id,
                # create_new: leave any other W&B run of this process (a training logger) alone
                resume="allow", reinit="create_new", config=config,
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False),
                **init_kwargs,
            )
            run.log(data_fn(wandb))
            run.finish()
            self.logged += 1
        except Exception as e:  # W&B must never fail the benchmark
            warn(f"logging {what} failed ({first_line(e)}); continuing without W&B")
            self.enabled = False
            if run is not None:
                try:
                    run.finish(exit_code=1)
                except Exception:
                    pass

    def log_run(self, dataset, method, w, metrics, seed=None, config=None, images=None) -> None:
        """Metrics (and sample grid PNGs, as {label: path}) of one evaluated point. Pass ``seed`` only when the
        experiment has several seeds: it is then part of the run name."""
        name = run_name(dataset, method, w, seed)

        def data(wandb):
            logged = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}
            for label, path in (images or {}).items():
                logged[f"samples/{label}"] = wandb.Image(str(path), caption=f"{name} {label}")
            return logged

        point = {"dataset": dataset, "method": method, "w": float(w), "seed": seed, **dict(config or {})}
        self._log(name, data, name=name, group=f"{self.experiment}/{dataset}", job_type=method,
                  tags=[dataset, method], config={**self.config, "point": point})

    def log_summary(self, leaderboard, runs=None, figures=None, protocol=None) -> None:
        """The leaderboard (and runs, and the protocol table) as wandb.Table, metric-vs-w line charts of the
        selection seeds per dataset, and figure PNGs; the protocol also goes into the run's config."""
        def data(wandb):
            logged: dict[str, Any] = {"leaderboard": wandb.Table(dataframe=_plain(leaderboard))}
            if protocol:
                logged["protocol"] = wandb.Table(dataframe=_plain(pd.DataFrame(protocol)))
            if runs is not None and len(runs):
                logged["runs"] = wandb.Table(dataframe=_plain(runs))
                agg = aggregate_seeds(runs[runs["phase"] == "selection"])
                for metric in present_metrics(agg):
                    for dataset, group in agg.groupby("dataset", sort=False):
                        lines = {m: group[(group["method"] == m) & group[metric].notna()].sort_values("w")
                                 for m in ("cfg", "dog")}
                        lines = {m: line for m, line in lines.items() if len(line)}
                        if lines:
                            logged[f"{metric}_vs_w/{dataset}"] = wandb.plot.line_series(
                                xs=[line["w"].tolist() for line in lines.values()],
                                ys=[line[metric].tolist() for line in lines.values()],
                                keys=list(lines), title=f"{dataset}: {metric} vs w", xname="w")
            for label, path in (figures or {}).items():
                logged[f"figures/{label}"] = wandb.Image(str(path), caption=label)
            return logged

        config = {**self.config, "protocol": {r["setting"]: r["this run"] for r in protocol or []}}
        self._log("the leaderboard", data, name=f"{self.experiment}-leaderboard", group=self.experiment,
                  job_type="leaderboard", config=config)

    def finish(self) -> None:
        if self.logged and self.mode == "offline":
            print(f"W&B: {self.logged} offline run(s) in {self.directory / 'wandb'}; upload with: "
                  f"wandb sync {self.directory / 'wandb'}/offline-run-*", file=sys.stderr)
        self.logged = 0


def make_tracker(experiment, results_root: Optional[str | os.PathLike] = None):
    """The tracker an ``Experiment`` asks for: a WandbTracker, or a NullTracker when W&B is disabled."""
    settings = experiment.tracking.wandb
    mode = settings.resolved_mode()
    if mode == "disabled":
        return NullTracker()
    return WandbTracker(experiment.name, experiment.to_dict(), project=settings.project, entity=settings.entity,
                        mode=mode, directory=experiment.results_dir(results_root))
