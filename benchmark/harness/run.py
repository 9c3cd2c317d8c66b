"""An experiment run (``dogbench run``): every stage for every dataset, then the report.

    prepare -> latents -> finetune -> sample -> evaluate   (per dataset)   -> runs.csv, leaderboard.csv, plots, W&B

A run killed at any point and restarted finishes with the same leaderboard as an uninterrupted one: every stage
output is keyed by its config and written atomically, sample i depends only on (seed, i), and runs.csv is rebuilt
from the per-sample-set metric files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from benchmark.devices import default_device
from benchmark.harness.experiment import Experiment, RunSpec
from benchmark.harness.identity import stage_hash
from benchmark.harness.leaderboard import (build_leaderboard, run_provenance, select_best, to_markdown, update_runs,
                                           write_leaderboard)
from benchmark.harness.plots import compose_sample_grids, plot_metrics_vs_w, save_image_grid
from benchmark.harness.stages import (DatasetContext, distributed, init_distributed, log, stage_evaluate, stage_finetune,
                                      stage_latents, stage_prepare, stage_sample)
from benchmark.harness.wandb_log import make_tracker
from benchmark.io import atomic_write_text, cached_file_sha256

STAGE_ORDER = ("prepare", "latents", "finetune", "sample", "evaluate", "report")
GRID_IMAGES = 64


def feature_description(metrics_result: dict) -> tuple[str, str]:
    """runs.csv's feature_networks and preprocessing columns, from evaluate_samples' protocol records."""
    nets, preps = [], []
    for metric, proto in sorted(metrics_result.get("protocol", {}).items()):
        nets.append(f"{metric}={proto.get('network', '?')}:{str(proto.get('weights_sha256', ''))[:12]}")
        preps.append(f"{metric}={proto.get('preprocess', proto.get('resize', '?'))}")
    return "; ".join(nets), "; ".join(preps)


def run_row(ctx: DatasetContext, spec: RunSpec, result: dict, num_samples: int) -> dict:
    nets, prep = feature_description(result)
    return {
        "dataset": spec.dataset, "method": spec.method, "w": spec.w, "seed": spec.seed,
        **result["metrics"],
        "num_samples": num_samples,
        "sampling_steps": ctx.exp.sampling.steps,
        "finetuned_sha256": cached_file_sha256(ctx.finetuned_path),
        "pretrained_sha256": ctx.pretrained_sha256() if spec.method == "dog" else "",
        "feature_networks": nets,
        "preprocessing": prep,
        "experiment": ctx.exp.name,
        # the evaluate stage's hash: what made this row (a changed description or W&B mode does not orphan it)
        "config_hash": stage_hash(ctx.exp, "evaluate", spec.dataset, method=spec.method, w=spec.w, seed=spec.seed),
        **run_provenance(),
    }


def save_sample_grid(folder, path: Path, n: int = GRID_IMAGES) -> Path:
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in folder.image_paths()[:n]])
    return save_image_grid(images, path)


def run_dataset(exp: Experiment, dataset: str, results_dir: Path, device: str, stages: Sequence[str],
                tracker, progress: bool = True) -> list[dict]:
    ctx = DatasetContext(exp, dataset, results_dir, device, progress)
    num_classes = stage_prepare(ctx)
    log(f"{dataset}: {num_classes} classes")
    if "latents" in stages:
        stage_latents(ctx)
    stage_finetune(ctx)  # always: a finished fine-tune is a cheap lookup, and sampling needs its checkpoint
    if "sample" not in stages:
        return []
    rows = []
    rank, _ = distributed()
    for spec in exp.runs(dataset):
        folder = stage_sample(ctx, spec)
        if "evaluate" not in stages or rank != 0:
            continue
        result = stage_evaluate(ctx, spec, folder)
        row = run_row(ctx, spec, result, exp.sampling.num_samples)
        rows.append(row)
        grid = save_sample_grid(folder, ctx.dir / "grids" / f"{spec.method}-w{spec.w:g}-seed{spec.seed}.png")
        tracker.log_run(dataset, spec.method, spec.w, result["metrics"],
                        seed=spec.seed if len(exp.seeds) > 1 else None, images={"grid": grid})
    return rows


def current_rows(exp: Experiment, runs):
    """The runs.csv rows made by the experiment's current settings (rows of changed settings stay in the file)."""
    if not len(runs):
        return runs
    expected = [stage_hash(exp, "evaluate", r.dataset, method=r.method, w=r.w, seed=int(r.seed))
                if r.dataset in exp.datasets else None for r in runs.itertuples()]
    return runs[runs["config_hash"].astype(str) == expected]


def sample_grid_figures(exp: Experiment, results_dir: Path, runs) -> dict:
    """Per dataset, sample grids side by side: fine-tune only, and CFG and DoG each at its best guided w (w != 1;
    the leaderboard may pick w = 1 when guidance does not help, which would show three identical grids)."""
    candidates = runs[(runs["method"] == "none") | (runs["w"] != 1.0)]
    best = select_best(candidates, exp.evaluation.select_by, shared_w1=False)
    names = {"none": "fine-tune only", "cfg": "CFG", "dog": "DoG"}
    figures = {}
    for dataset in exp.datasets:
        panels = {}
        for _, row in best[best["dataset"] == dataset].iterrows():
            grid = results_dir / dataset / "grids" / f"{row['method']}-w{row['w']:g}-seed{exp.seeds[0]}.png"
            if grid.exists():
                panels[f"{names[row['method']]} w={row['w']:g}"] = grid
        if panels:
            figures[f"samples_{dataset}"] = compose_sample_grids(
                panels, results_dir / "plots" / f"samples_{dataset}.png",
                title=f"{dataset}: fine-tune only, and each guidance at its best w > 1 ({exp.evaluation.select_by})")
    return figures


def report(exp: Experiment, results_dir: Path, rows: list[dict], tracker) -> Optional[str]:
    """runs.csv (merged with earlier runs of this experiment), leaderboard.csv/.md, plots; returns the markdown."""
    runs = update_runs(results_dir / "runs.csv", rows)
    runs = current_rows(exp, runs)
    if not len(runs):
        return None
    shared_w1 = 1.0 in exp.w_values()
    board = build_leaderboard(runs, select_by=exp.evaluation.select_by, shared_w1=shared_w1)
    if "study" in runs.columns and runs["study"].notna().any():  # a best w found by an Optuna study names it
        studies = runs.dropna(subset=["study"]).drop_duplicates(["dataset", "method", "w"])
        board = board.merge(studies[["dataset", "method", "w", "study"]], on=["dataset", "method", "w"], how="left")
    write_leaderboard(board, results_dir / "leaderboard.csv")
    markdown = to_markdown(board)
    atomic_write_text(results_dir / "leaderboard.md", f"# {exp.name}: each method at its best w "
                      f"(selected by {exp.evaluation.select_by})\n\n{markdown}\n")
    figures = {f"{m}_vs_w": p for m, p in plot_metrics_vs_w(runs, results_dir / "plots", shared_w1=shared_w1).items()}
    figures.update(sample_grid_figures(exp, results_dir, runs))
    tracker.log_summary(board, runs, figures)
    return markdown


def run_experiment(exp: Experiment, datasets: Optional[Sequence[str]] = None, stages: Sequence[str] = STAGE_ORDER,
                   device: Optional[str] = None, results_root=None, progress: bool = True) -> Optional[str]:
    device = init_distributed(device or default_device())
    results_dir = exp.results_dir(results_root)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / "config.yaml", exp.to_yaml())
    datasets = list(datasets or exp.datasets)
    log(f"experiment {exp.name}: {len(datasets)} dataset(s), {len(exp.runs(datasets[0]))} sample sets each, "
        f"{exp.sampling.num_samples} images per set, device {device}; results in {results_dir}")
    tracker = make_tracker(exp, results_root)
    rows = []
    with tracker:
        for dataset in datasets:
            rows += run_dataset(exp, dataset, results_dir, device, stages, tracker, progress)
        rank, _ = distributed()
        markdown = report(exp, results_dir, rows, tracker) if "report" in stages and rank == 0 else None
    if markdown:
        print(f"\n{exp.name}: leaderboard ({results_dir / 'leaderboard.csv'})\n\n{markdown}\n")
    return markdown
