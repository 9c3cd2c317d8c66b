"""Weights & Biases logging of an experiment. It is a record, never a requirement: any W&B failure is one warning
line, after which the tracker does nothing and the run goes on.

Every W&B run of an experiment is in the group ``<experiment>`` and is written under ``results/<experiment>/wandb/``:

- job type ``fine-tune``: the fine-tune's training curves, one run per dataset, started by the training code and
  filed there by ``finetune_wandb_run``;
- job type ``evaluate``: one run per evaluated sample set (dataset, method, w, seed): its metrics, its sample grid,
  and a one-row ``sample_set`` table (W&B's workspace stacks these rows across the group's runs);
- job type ``report``: one run per experiment with the leaderboard, runs and protocol tables, metric-vs-w line
  charts of the selection seeds and the PNG figures (sample grids side by side among them).

Tags: ``dataset:<name>``, ``method:<name>``, ``w:<w>``, ``seed:<n>``, ``phase:<fine-tune|selection|report|control>``.

Run ids are stable within a results directory: a random key kept in ``results/<experiment>/wandb/dogbench.json``
plus what the run is (a sample set's evaluate-stage hash; the experiment's report). Rerunning ``dogbench run``
therefore updates the same W&B runs (``resume="allow"``), each update at the next step; a sample set logged before
with the same content is not logged again. W&B's offline mode writes one ``offline-run-*`` folder per update of a
run (the same run id in each); ``wandb sync`` uploads them in order. Upload everything an experiment wrote with
``wandb sync results/<experiment>/wandb/offline-run-*``; ``finish`` prints that command.

The mode follows ``benchmark.tracking.resolve_mode``.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import wandb

from benchmark.errors import first_line
from benchmark.harness.identity import stage_hash
from benchmark.harness.runs import present_metrics
from benchmark.harness.selection import aggregate_seeds
from benchmark.io import atomic_write_json, config_hash, file_lock, file_sha256, read_json
from benchmark.tracking import WandbRun, tag, warn

STATE_FILE = "dogbench.json"  # in results/<experiment>/wandb: the run-id key and what each run last logged
NO_W_METHODS = ("real",)  # the real-data control has no w


def run_name(dataset: str, method: str, w: float, seed: Optional[int] = None) -> str:
    name = f"{dataset}-{method}" + ("" if _no_w(w) else f"-w{float(w):g}")
    return name if seed is None else f"{name}-s{seed}"


def entry_name(entry: Any) -> str:
    """The name an experiment's dataset or method entry goes by in tables and tags: the entry itself when it is a
    name, else its ``label`` or ``name`` (your own dataset ``{name, path}``, a method ``{name, label, params}``)."""
    if isinstance(entry, Mapping):
        return str(entry.get("label") or entry.get("name"))
    return str(entry)


def _no_w(w) -> bool:
    """True for the w of a sample set that has none (the real-data control's NaN)."""
    return w is None or bool(np.isnan(float(w)))


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """One Python type per column (float for numbers, str otherwise) and None for NaN/NA: wandb.Table infers a
    column's type from its first row and rejects a later row of another type (e.g. an int after a float, which a
    runs table merged from CSV rows and fresh rows can hold)."""
    out = {}  # the columns, joined at once (a leaderboard with the metric card has hundreds)
    for column in df.columns:
        values = df[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().sum() and numeric.notna().sum() == values.notna().sum():
            cells = [None if pd.isna(v) else float(v) for v in numeric]
        else:
            cells = [None if pd.isna(v) else str(v) for v in values]
        out[column] = pd.Series(cells, index=df.index, dtype=object)
    return pd.DataFrame(out, index=df.index, columns=list(df.columns))


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}


def offline_runs(directory: str | os.PathLike) -> list[Path]:
    """The offline W&B run folders under ``directory/wandb`` that ``wandb sync`` has not uploaded yet."""
    runs = sorted(Path(directory, "wandb").glob("offline-run-*"))
    return [run for run in runs if not any(Path(f"{log}.synced").exists() for log in run.glob("run-*.wandb"))]


def sync_command(directory: str | os.PathLike) -> str:
    """The command that uploads every offline W&B run of the experiment whose results are in ``directory``."""
    return f"wandb sync {Path(directory) / 'wandb'}/offline-run-*"


def finetune_wandb_run(exp, dataset: str, results_dir: str | os.PathLike, variant: str = "") -> WandbRun:
    """How the harness files a fine-tune's W&B run (``RunOutput.wandb_run``): beside the experiment's other
    runs in ``results_dir/wandb``, in its group, job type fine-tune, with the experiment and the stage's hash."""
    return WandbRun(directory=Path(results_dir), group=exp.name, job_type="fine-tune",
                    name=f"{dataset}-fine-tune" + (f"-{variant}" if variant else ""),
                    tags=(tag("dataset", dataset), tag("phase", "fine-tune"))
                    + ((tag("finetune", variant),) if variant else ()),  # a variant of finetunes:
                    config={"experiment": exp.name, "stage": "finetune",
                            "stage_hash": stage_hash(exp, "finetune", dataset), "experiment_config": exp.to_dict()})


class NullTracker:
    """The tracker when W&B is disabled: every call does nothing."""

    enabled = False
    mode = "disabled"
    directory: Optional[Path] = None

    def log_run(self, dataset: str, method: str, w: float, metrics: Mapping[str, Any], seed: Optional[int] = None,
                config: Optional[Mapping[str, Any]] = None, images: Optional[Mapping[str, str | os.PathLike]] = None,
                *, phase: Optional[str] = None, num_samples: Optional[int] = None,
                stage_hash: Optional[str] = None) -> None:
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
    """Logs to W&B, one short-lived W&B run (or update of one) per call (see the module docstring)."""

    def __init__(self, experiment: str, config: Mapping[str, Any], project: str = "dogbench",
                 entity: Optional[str] = None, mode: str = "offline", directory: str | os.PathLike = "."):
        self.experiment = experiment
        self.config = dict(config)
        self.project, self.entity, self.mode = project, entity, mode
        # wandb.init(dir=D) writes under D/wandb/, so D is the experiment's results directory
        self.directory = Path(directory)
        self.state_path = self.directory / "wandb" / STATE_FILE
        self.enabled = True
        self.logged = 0
        self._config_hash = config_hash(self.config)

    # -- the run ids and what was logged, shared by every invocation on this results directory

    def run_id(self, *identity: Any) -> str:
        """The W&B run id of the run that ``identity`` names; the same on every call for this results directory."""
        with file_lock(self.state_path):
            state = read_json(self.state_path, {})
            if "key" not in state:
                state["key"] = uuid.uuid4().hex[:12]
                atomic_write_json(self.state_path, state)
        return config_hash({"key": state["key"], "run": list(identity)}, 16)

    def _record(self, run_id: str) -> dict:
        return read_json(self.state_path, {}).get("runs", {}).get(run_id, {})

    def _remember(self, run_id: str, record: dict) -> None:
        with file_lock(self.state_path):
            state = read_json(self.state_path, {})
            state.setdefault("runs", {})[run_id] = record
            atomic_write_json(self.state_path, state)

    # -- logging

    def _log(self, what: str, data_fn, identity: tuple, digest_fn=None, **init_kwargs) -> None:
        """Start (or resume) the W&B run that ``identity`` names, log ``data_fn(wandb)`` at its next step, finish.
        When ``digest_fn()`` equals the digest logged last time, nothing is logged. Any failure disables the
        tracker with one warning line."""
        if not self.enabled:
            return
        run = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            run_id = self.run_id(*identity)
            record = self._record(run_id)
            digest = digest_fn() if digest_fn else None
            if digest is not None and record.get("digest") == digest:
                return
            run = wandb.init(
                project=self.project, entity=self.entity, mode=self.mode, dir=str(self.directory), id=run_id,
                # create_new: leave any other W&B run of this process (a training logger) alone
                resume="allow", reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False),
                **init_kwargs,
            )
            # an offline run resumed restarts at step 0: the step is counted here, so updates stay in order
            step = max(run.step, int(record.get("updates", 0)))
            run.log(data_fn(wandb), step=step)
            run.finish()
            run = None
            self._remember(run_id, {"name": init_kwargs.get("name"), "job_type": init_kwargs.get("job_type"),
                                    "updates": step + 1, "digest": digest})
            self.logged += 1
        except Exception as e:  # W&B must never fail the benchmark
            warn(f"logging {what} failed ({first_line(e)}); continuing without W&B")
            self.enabled = False
            if run is not None:
                try:
                    run.finish(exit_code=1)
                except Exception:
                    pass

    def log_run(self, dataset, method, w, metrics, seed=None, config=None, images=None, *, phase=None,
                num_samples=None, stage_hash=None) -> None:
        """One evaluated sample set (the real-data control's images too, with w NaN): its metrics, sample grid PNGs ({label: path}) and a one-row ``sample_set``
        table. ``phase`` (selection, report, control), ``num_samples`` and ``stage_hash`` (the evaluate stage's
        identity hash, runs.csv's config_hash) go into the config; the stage hash also names the W&B run, so a
        rerun updates it. ``config`` adds further settings."""
        name = run_name(dataset, method, w, seed)
        point = {"experiment": self.experiment, "dataset": dataset, "method": method,
                 "w": None if _no_w(w) else float(w), "seed": seed,
                 "phase": phase, "num_samples": num_samples, "stage_hash": stage_hash, **dict(config or {})}
        numbers = _numbers(metrics)
        images = {label: Path(path) for label, path in (images or {}).items()}

        def data(wandb):
            logged: dict[str, Any] = dict(numbers)
            grids = {label: wandb.Image(str(path), caption=f"{name} {label}") for label, path in images.items()}
            logged.update({f"samples/{label}": image for label, image in grids.items()})
            row = {k: point[k] for k in ("dataset", "phase", "method", "w", "seed", "num_samples")}
            row.update(numbers)
            columns = list(row) + list(grids)
            logged["sample_set"] = wandb.Table(columns=columns, data=[list(row.values()) + list(grids.values())])
            return logged

        def digest() -> str:  # what was logged: a rerun that finds the same does not log it again
            return config_hash({"project": [self.project, self.entity], "config": point, "metrics": numbers,
                                "images": {label: file_sha256(path) for label, path in images.items()}})

        tags = [tag("dataset", dataset), tag("method", method)] + ([] if _no_w(w) else [tag("w", float(w))])
        tags += [tag("seed", seed)] if seed is not None else []
        tags += [tag("phase", phase)] if phase else []
        tags += [tag("finetune", point["finetune"])] if point.get("finetune") else []  # a variant of finetunes:
        self._log(name, data, ("evaluate", stage_hash or [name, self._config_hash]), digest, name=name,
                  group=self.experiment, job_type="evaluate", tags=tags,
                  config={**point, "experiment_config": self.config})

    def log_summary(self, leaderboard, runs=None, figures=None, protocol=None) -> None:
        """The leaderboard (and runs, and the protocol table) as wandb.Table, metric-vs-w line charts of the
        selection seeds per dataset, and figure PNGs, as the next update of the experiment's one report run; the
        protocol also goes into the run's config."""
        def data(wandb):
            logged: dict[str, Any] = {"leaderboard": wandb.Table(dataframe=_plain(leaderboard))}
            if protocol:
                logged["protocol"] = wandb.Table(dataframe=_plain(pd.DataFrame(protocol)))
            if runs is not None and len(runs):
                logged["runs"] = wandb.Table(dataframe=_plain(runs))
                logged.update(_metric_vs_w_charts(wandb, runs))
            for label, path in (figures or {}).items():
                logged[f"figures/{label}"] = wandb.Image(str(path), caption=label)
            return logged

        config = {"experiment": self.experiment, "experiment_config": self.config,
                  "datasets": self.config.get("datasets"), "methods": self.config.get("methods"),
                  "selection_seeds": self.config.get("selection", {}).get("seeds"),
                  "report_seeds": self.config.get("report", {}).get("seeds"),
                  "finetune_seed": self.config.get("finetune", {}).get("seed"),
                  "protocol": {r["setting"]: r["this run"] for r in protocol or []}}
        tags = [tag("phase", "report")]
        tags += [tag("dataset", entry_name(d)) for d in self.config.get("datasets") or []]
        tags += [tag("method", entry_name(m)) for m in self.config.get("methods") or []]
        tags += [tag("finetune", name) for name in self.config.get("finetunes") or {}]
        self._log("the leaderboard", data, ("report",), name=f"{self.experiment}-leaderboard",
                  group=self.experiment, job_type="report", tags=tags, config=config)

    def finish(self) -> None:
        """Say how to upload the experiment's offline runs (its fine-tunes' too), if any are not uploaded yet."""
        waiting = offline_runs(self.directory)
        if waiting:
            print(f"W&B: {len(waiting)} offline run folder(s) of {self.experiment} not uploaded yet "
                  f"({self.logged} logged now) in {self.directory / 'wandb'}; upload them with: "
                  f"{sync_command(self.directory)}", file=sys.stderr)
        self.logged = 0


def _metric_vs_w_charts(wandb, runs: pd.DataFrame) -> dict:
    """Per metric and dataset, a line per method over w, from the selection seeds' mean."""
    charts = {}
    agg = aggregate_seeds(runs[runs["phase"] == "selection"])
    for metric in present_metrics(agg):
        for dataset, group in agg.groupby("dataset", sort=False):
            lines = {m: line.sort_values("w") for m, line in group[group[metric].notna()].groupby("method", sort=False)
                     if m not in NO_W_METHODS}
            if lines:
                charts[f"{metric}_vs_w/{dataset}"] = wandb.plot.line_series(
                    xs=[line["w"].tolist() for line in lines.values()],
                    ys=[line[metric].tolist() for line in lines.values()],
                    keys=list(lines), title=f"{dataset}: {metric} vs w", xname="w")
    return charts


def make_tracker(experiment, results_root: Optional[str | os.PathLike] = None):
    """The tracker an ``Experiment`` asks for: a WandbTracker, or a NullTracker when W&B is disabled."""
    settings = experiment.tracking.wandb
    mode = settings.resolved_mode()
    if mode == "disabled":
        return NullTracker()
    return WandbTracker(experiment.name, experiment.to_dict(), project=settings.project, entity=settings.entity,
                        mode=mode, directory=experiment.results_dir(results_root))
