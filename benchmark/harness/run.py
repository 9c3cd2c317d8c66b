"""An experiment run (``dogbench run``): every stage for every dataset, then the report.

    prepare -> latents -> finetune -> selection (sample + evaluate the w grid on the selection seeds)
    -> report (sample + evaluate the chosen settings on the report seeds, and the controls)     (per dataset)
    -> runs.csv, leaderboard.csv/.md with intervals, PROTOCOL.md, plots, W&B

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
from benchmark.harness.leaderboard import build_leaderboard, describe, noise_seeds, report_plan, to_markdown, write_leaderboard
from benchmark.harness.plots import compose_sample_grids, plot_metrics_vs_w, save_image_grid
from benchmark.harness.protocol import write_protocol
from benchmark.harness.runs import run_provenance, update_runs
from benchmark.harness.selection import chosen_w
from benchmark.distributed import rank_world, setup
from benchmark.harness.stages import (DatasetContext, log, real_control_split, stage_evaluate, stage_finetune,
                                      stage_latents, stage_prepare, stage_real_control, stage_sample)
from benchmark.harness.wandb_log import NullTracker, make_tracker
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


def run_row(ctx: DatasetContext, spec: RunSpec, result: dict, num_samples: int, phase: str,
            sample_dir: Path) -> dict:
    nets, prep = feature_description(result)
    return {
        "dataset": spec.dataset, "phase": phase, "method": spec.method, "w": spec.w, "seed": spec.seed,
        **result["metrics"],
        "num_samples": num_samples,
        "sampling_steps": ctx.exp.sampling.steps if spec.method != "real" else None,
        "finetuned_sha256": cached_file_sha256(ctx.finetuned_path) if spec.method != "real" else "",
        "pretrained_sha256": ctx.pretrained_sha256() if spec.method == "dog" else "",
        "feature_networks": nets,
        "preprocessing": prep,
        "experiment": ctx.exp.name,
        # the evaluate stage's hash: what made this row (a changed description or W&B mode does not orphan it)
        "config_hash": row_hash(ctx.exp, spec.dataset, phase, spec.method, spec.w, spec.seed, num_samples),
        "sample_dir": str(Path(sample_dir).relative_to(ctx.results_dir)),
        **run_provenance(),
    }


def row_hash(exp: Experiment, dataset: str, phase: str, method: str, w: float, seed: int, num_samples: int) -> str:
    if method == "real":  # the real-data control depends on the evaluation and the data, not on any model
        return stage_hash(exp, "latents", dataset) + f"-real-{num_samples}-{exp.evaluation.ref_split}-{seed}"
    return stage_hash(exp, "evaluate", dataset, method=method, w=w, seed=seed, num_samples=num_samples)


def save_sample_grid(folder, path: Path, n: int = GRID_IMAGES) -> Path:
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in folder.image_paths()[:n]])
    return save_image_grid(images, path)


def report_runs(exp: Experiment, dataset: str, chosen: dict) -> list[tuple[RunSpec, str]]:
    """(sample set, phase) of everything the leaderboard reports: each planned row on every report seed, and the
    extra seed of the seed-noise control when there is only one report seed."""
    specs = []
    for method, _, w in report_plan(exp, dataset, chosen):
        for seed in exp.report.seeds:
            spec = (RunSpec(dataset, "none" if w == 1.0 else method, w, seed), "report")
            if spec not in specs:
                specs.append(spec)
    if exp.report.controls:
        a, b = noise_seeds(exp)
        if b not in exp.report.seeds:
            specs.append((RunSpec(dataset, "none", 1.0, b), "control"))
    return specs


def run_dataset(exp: Experiment, dataset: str, results_dir: Path, device: str, stages: Sequence[str],
                tracker, progress: bool = True) -> list[dict]:
    ctx = DatasetContext(exp, dataset, results_dir, device, progress)
    num_classes = stage_prepare(ctx)  # a check, always: every other stage needs the data
    log(f"{dataset}: {num_classes} classes")
    later = [s for s in STAGE_ORDER if s in stages]
    if not later or later == ["prepare"]:
        return []
    if "latents" in stages or "finetune" in stages:
        stage_latents(ctx, run="latents" in stages)
    if not {"finetune", "sample", "evaluate"} & set(stages):
        return []
    stage_finetune(ctx, run="finetune" in stages)
    if not {"sample", "evaluate"} & set(stages):
        return []
    rank, _ = rank_world()

    def sample_and_score(spec: RunSpec, n: int, phase: str) -> tuple[Optional[dict], dict]:
        """(runs.csv row on rank 0 else None, the metrics: on every rank)."""
        folder = stage_sample(ctx, spec, n, run="sample" in stages)
        if "evaluate" not in stages:
            return None, {}
        result = stage_evaluate(ctx, spec, folder, n)  # every rank: the features are extracted in shares
        if rank != 0:
            return None, result["metrics"]
        grid = save_sample_grid(folder, ctx.dir / "grids" / f"{spec.method}-w{spec.w:g}-seed{spec.seed}.png")
        row = run_row(ctx, spec, result, n, phase, folder.root)
        tracker.log_run(dataset, spec.method, spec.w, result["metrics"], seed=spec.seed, images={"grid": grid},
                        phase=phase, num_samples=n, stage_hash=row["config_hash"])
        return row, result["metrics"]

    specs = exp.selection_runs(dataset)
    selection = [sample_and_score(spec, exp.selection_num_samples(), "selection") for spec in specs]
    if "evaluate" not in stages:
        return []  # w cannot be chosen without scores: the report sets wait for an evaluated selection
    scored = [{"dataset": s.dataset, "phase": "selection", "method": s.method, "w": s.w, "seed": s.seed, **metrics}
              for s, (_, metrics) in zip(specs, selection)]  # every rank makes the same choice
    chosen = chosen_w(scored, exp.evaluation.select_by, shared_w1=1.0 in exp.w_values())
    log(f"{dataset}: chosen on selection seeds {exp.selection.seeds}: "
        + ", ".join(f"{m} w={w:g}" for (_, m), w in chosen.items()))
    rows = [row for row, _ in selection]
    rows += [sample_and_score(spec, exp.sampling.num_samples, phase)[0]
             for spec, phase in report_runs(exp, dataset, chosen)]
    if exp.report.controls:
        n, seed = exp.sampling.num_samples, exp.report.seeds[0]
        result, root = stage_real_control(ctx, n, seed)
        rows.append(run_row(ctx, RunSpec(dataset, "real", float("nan"), seed), result, n, "control", root))
        tracker.log_run(dataset, "real", float("nan"), result["metrics"], seed=seed, phase="control", num_samples=n,
                        stage_hash=rows[-1]["config_hash"])
    return [row for row in rows if row is not None] if rank == 0 else []


def current_rows(exp: Experiment, runs):
    """The runs.csv rows made by the experiment's current settings (rows of changed settings stay in the file)."""
    if not len(runs):
        return runs
    expected = [row_hash(exp, r.dataset, r.phase, r.method, r.w, int(r.seed), int(r.num_samples))
                if r.dataset in exp.datasets else None for r in runs.itertuples()]
    return runs[runs["config_hash"].astype(str) == expected]


def sample_grid_figures(exp: Experiment, results_dir: Path, board) -> dict:
    """Per dataset, sample grids side by side (first report seed): fine-tune only, and each method at its
    selected w and at each fixed w."""
    names = {"none": "fine-tune only", "cfg": "CFG", "dog": "DoG"}
    seed = exp.report.seeds[0]
    figures = {}
    for dataset in exp.datasets:
        panels = {}
        rows = board[(board["dataset"] == dataset) & board["method"].isin(list(names))
                     & (board["rule"] != "seed noise")] if len(board) else []
        for _, row in (rows.iterrows() if len(rows) else []):
            method = "none" if row["w"] == 1.0 else row["method"]
            grid = results_dir / dataset / "grids" / f"{method}-w{row['w']:g}-seed{seed}.png"
            if grid.exists():
                panels[f"{names[row['method']]} {row['rule']} (w={row['w']:g})"] = grid
        if panels:
            figures[f"samples_{dataset}"] = compose_sample_grids(
                panels, results_dir / "plots" / f"samples_{dataset}.png",
                title=f"{dataset}: report seed {seed}; w chosen by {exp.evaluation.select_by} on the selection seeds")
    return figures


def report(exp: Experiment, results_dir: Path, rows: list[dict], tracker) -> Optional[str]:
    """runs.csv (merged with earlier runs of this experiment), leaderboard.csv/.md, PROTOCOL.md, plots; returns the
    markdown."""
    runs = update_runs(results_dir / "runs.csv", [r for r in rows if r is not None])
    runs = current_rows(exp, runs)
    if not len(runs):
        return None
    board = build_leaderboard(exp, runs, results_dir, results_dir.parent / "cache")
    write_leaderboard(board, results_dir / "leaderboard.csv")
    markdown = to_markdown(board) if len(board) else "(no report sample sets evaluated yet)"
    real = ("are part of" if real_control_split(exp.evaluation.ref_split) == exp.evaluation.ref_split
            else "are not part of")
    atomic_write_text(results_dir / "leaderboard.md",
                      f"# {exp.name}\n\n{describe(exp, board)} The real-data control's images {real} the reference "
                      f"statistics (reference: {exp.evaluation.ref_split} split). Protocol: PROTOCOL.md.\n\n"
                      f"{markdown}\n")
    protocol = write_protocol(exp, results_dir / "PROTOCOL.md")
    selection = runs[runs["phase"] == "selection"]
    figures = {f"{m}_vs_w": p for m, p in plot_metrics_vs_w(selection, results_dir / "plots", board=board,
                                                              shared_w1=1.0 in exp.w_values()).items()}
    figures.update(sample_grid_figures(exp, results_dir, board))
    tracker.log_summary(board, runs, figures, protocol=protocol)
    return markdown


def run_experiment(exp: Experiment, datasets: Optional[Sequence[str]] = None, stages: Sequence[str] = STAGE_ORDER,
                   device: Optional[str] = None, results_root=None, progress: bool = True) -> Optional[str]:
    device = setup(device or default_device())
    results_dir = exp.results_dir(results_root)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / "config.yaml", exp.to_yaml())
    datasets = list(datasets or exp.datasets)
    log(f"experiment {exp.name}: {len(datasets)} dataset(s), {len(exp.selection_runs(datasets[0]))} selection sample "
        f"sets each ({exp.selection_num_samples()} images), then the chosen settings on report seeds "
        f"{exp.report.seeds} ({exp.sampling.num_samples} images); device {device}; results in {results_dir}")
    rank, _ = rank_world()
    tracker = make_tracker(exp, results_root) if rank == 0 else NullTracker()
    rows = []
    with tracker:
        for dataset in datasets:
            rows += run_dataset(exp, dataset, results_dir, device, stages, tracker, progress and rank == 0)
        markdown = report(exp, results_dir, rows, tracker) if "report" in stages and rank == 0 else None
    if markdown:
        print(f"\n{exp.name}: leaderboard ({results_dir / 'leaderboard.csv'})\n\n{markdown}\n")
    return markdown
