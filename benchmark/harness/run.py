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
from benchmark.guidance import PRETRAINED
from benchmark.harness.experiment import Experiment
from benchmark.harness.design import design_axes, with_design_and_compute
from benchmark.harness.design_plots import design_figures
from benchmark.harness.finetunes import ONE, check_adapter_targets, variant_names, variants
from benchmark.harness.methods import UNGUIDED, RunSpec, run_spec
from benchmark.harness.identity import stage_hash
from benchmark.harness.leaderboard import UNGUIDED_SPEC, noise_seeds, report_plan, write_leaderboard
from benchmark.harness.leaderboard_md import describe
from benchmark.harness.neighbours import neighbour_figures
from benchmark.harness.plots import compose_sample_grids, plot_metrics_vs_w, save_image_grid
from benchmark.harness.runs import VARIANT, run_provenance, update_runs
from benchmark.sampling import recorded_timing, sample_set_nfe
from benchmark.harness.sources import check_recorded_sources
from benchmark.harness.selection import chosen
from benchmark.distributed import rank_world, setup
from benchmark.claims import share
from benchmark.harness.stages import (DatasetContext, claimed, log, sample_folder, scored_sets, stage_evaluate,
                                      stage_finetune, stage_latents, stage_prepare, stage_real_control, stage_sample)
from benchmark.metrics.evaluate import real_control_split
from benchmark.harness.variant_report import describe_variants, variant_leaderboard, variant_markdown, \
    write_variant_protocol
from benchmark.harness.wandb_log import NullTracker, make_tracker
from benchmark.data import locate_dataset
from benchmark.errors import UserError
from benchmark.io import atomic_write_json, atomic_write_text, cached_file_sha256
from benchmark.models import CheckpointError, resolve_checkpoint

STAGE_ORDER = ("prepare", "latents", "finetune", "sample", "evaluate", "report")
GRID_IMAGES = 64


def feature_description(metrics_result: dict) -> tuple[str, str]:
    """runs.csv's feature_networks and preprocessing columns, from evaluate_samples' protocol records."""
    nets, preps = [], []
    for metric, proto in sorted(metrics_result.get("protocol", {}).items()):
        nets.append(f"{metric}={proto.get('network', '?')}:{str(proto.get('weights_sha256', ''))[:12]}")
        preps.append(f"{metric}={proto.get('preprocess', proto.get('resize', '?'))}")
    return "; ".join(nets), "; ".join(preps)


def run_row(ctx: DatasetContext, run: Optional[RunSpec], result: dict, num_samples: int, phase: str,
            sample_dir: Path, seed: Optional[int] = None) -> dict:
    """A runs.csv row of a sample set (``run``), or of the real-data control (``run`` None, its ``seed``)."""
    nets, prep = feature_description(result)
    real = run is None
    return {
        "dataset": ctx.dataset, "phase": phase, "method": "real" if real else run.method,
        "w": float("nan") if real else run.w, "params": "" if real else run.params,
        "seed": seed if real else run.seed,
        **result["metrics"],
        "num_samples": num_samples,
        "sampling_steps": None if real else ctx.exp.sampling.steps,
        "finetuned_sha256": "" if real else cached_file_sha256(ctx.finetuned_path),
        "pretrained_sha256": ctx.pretrained_sha256() if not real and PRETRAINED in run.spec.models() else "",
        "feature_networks": nets,
        "preprocessing": prep,
        "experiment": ctx.exp.name,
        # the evaluate stage's hash: what made this row (a changed description or W&B mode does not orphan it)
        "config_hash": real_hash(ctx.exp, ctx.dataset, seed, num_samples) if real
        else stage_hash(ctx.exp, "evaluate", ctx.dataset, run=run, num_samples=num_samples),
        "sample_dir": str(Path(sample_dir).relative_to(ctx.results_dir)),
        **run_provenance(),
        **({} if real else {"nfe": sample_set_nfe(run.spec, ctx.exp.sampling.steps), **recorded_timing(sample_dir),
                            **design_axes(ctx.exp.design, run.method)}),
    }


def real_hash(exp: Experiment, dataset: str, seed: int, num_samples: int) -> str:
    """The real-data control depends on the evaluation and the data, not on any model."""
    return stage_hash(exp, "latents", dataset) + f"-real-{num_samples}-{exp.evaluation.ref_split}-{seed}"


def expected_hashes(exp: Experiment, dataset: str) -> set[str]:
    """The config hashes of every runs.csv row the experiment's current settings can make for ``dataset``: its
    selection sets, any grid point or fixed w on the report seeds, the seed-noise set and the real control."""
    n_sel, n = exp.selection_num_samples(), exp.sampling.num_samples
    hashes = {stage_hash(exp, "evaluate", dataset, run=r, num_samples=n_sel) for r in exp.selection_runs(dataset)}
    seeds = sorted(set(exp.report.seeds) | set(noise_seeds(exp)))
    candidates = {run_spec(dataset, e.key, s, 0) for e in exp.method_entries() for s in exp.grid(e.key)}
    candidates |= {run_spec(dataset, label, spec, 0) for label, _, spec in report_plan(exp, dataset, {})}
    for r in candidates:
        for seed in seeds:
            hashes.add(stage_hash(exp, "evaluate", dataset, run=run_spec(dataset, r.method, r.spec, seed),
                                  num_samples=n))
    hashes |= {real_hash(exp, dataset, exp.report.seeds[0], n)}
    return hashes


def save_sample_grid(folder, path: Path, n: int = GRID_IMAGES) -> Path:
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in folder.image_paths()[:n]])
    return save_image_grid(images, path)


def report_runs(exp: Experiment, dataset: str, chosen: dict) -> list[tuple[RunSpec, str]]:
    """(sample set, phase) of everything the leaderboard reports: each planned row on every report seed, and the
    extra seed of the seed-noise control when there is only one report seed."""
    specs = []
    for label, _, spec in report_plan(exp, dataset, chosen):
        for seed in exp.report.seeds:
            item = (run_spec(dataset, label, spec, seed), "report")
            if item not in specs:
                specs.append(item)
    if exp.report.controls:
        a, b = noise_seeds(exp)
        if b not in exp.report.seeds:
            specs.append((run_spec(dataset, UNGUIDED, UNGUIDED_SPEC, b), "control"))
    return specs


def run_dataset(exp: Experiment, dataset: str, results_dir: Path, device: str, stages: Sequence[str],
                tracker, progress: bool = True, variant: str = ONE) -> list[dict]:
    """The rows of one dataset under one fine-tune: ``exp`` is the variant's experiment (finetunes.variant)."""
    ctx = DatasetContext(exp, dataset, results_dir, device, progress, variant=variant)
    tagged = {VARIANT: variant} if variant else {}
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

    def sample_and_score(spec: RunSpec, n: int, phase: str) -> Optional[tuple[Optional[dict], dict]]:
        """(runs.csv row on rank 0 else None, the metrics: on every rank); None when another process holds the
        set (``share`` comes back to it)."""
        with claimed(sample_folder(ctx, spec, n).root, f"samples {spec.spec.describe()} seed {spec.seed}",
                     wait=False) as mine:
            return score(spec, n, phase) if mine else None

    def score(spec: RunSpec, n: int, phase: str) -> tuple[Optional[dict], dict]:
        folder = stage_sample(ctx, spec, n, run="sample" in stages)
        if "evaluate" not in stages:
            return None, {}
        result = stage_evaluate(ctx, spec, folder, n)  # every rank: the features are extracted in shares
        if rank != 0:
            return None, result["metrics"]
        grid = save_sample_grid(folder, ctx.dir / "grids" / variant / grid_name(spec))
        row = {**run_row(ctx, spec, result, n, phase, folder.root), **tagged}
        tracker.log_run(dataset, spec.method, spec.w, result["metrics"], seed=spec.seed, images={"grid": grid},
                        phase=phase, num_samples=n, stage_hash=row["config_hash"], config=tagged)
        return row, result["metrics"]

    specs = exp.selection_runs(dataset)
    # several `dogbench run` processes on this folder: each takes the sets nobody holds, then waits for the rest
    selection = share(specs, lambda spec: sample_and_score(spec, exp.selection_num_samples(), "selection"))
    if "evaluate" not in stages:  # w cannot be chosen without scores: the report sets wait for an evaluated selection
        log(f"{dataset}: made the {len(specs)} selection sample set(s) only; the report sets (the chosen w on report "
            f"seeds {exp.report.seeds}, fixed w, controls) need the selection scored first: rerun with --until "
            f"report (or --stages evaluate,report) to choose w and make them")
        return []
    scored = [{"dataset": s.dataset, "phase": "selection", "method": s.method, "w": s.w, "params": s.params,
               "seed": s.seed, **metrics} for s, (_, metrics) in zip(specs, selection)]  # every rank: the same choice
    choice = chosen(scored, exp.evaluation.select_by, exp.unguided_methods())
    log(f"{dataset}: chosen on selection seeds {exp.selection.seeds}: "
        + ", ".join(f"{m} {setting_text(w, p)}" for (_, m), (w, p) in choice.items()))
    rows = [row for row, _ in selection]
    rows += [row for row, _ in share(report_runs(exp, dataset, choice),
                                     lambda item: sample_and_score(item[0], exp.sampling.num_samples, item[1]))]
    if exp.report.controls:
        n, seed = exp.sampling.num_samples, exp.report.seeds[0]
        result, root = stage_real_control(ctx, n, seed)
        rows.append({**run_row(ctx, None, result, n, "control", root, seed=seed), **tagged})
        tracker.log_run(dataset, "real", float("nan"), result["metrics"], seed=seed, phase="control", num_samples=n,
                        stage_hash=rows[-1]["config_hash"], config=tagged)
    return [row for row in rows if row is not None] if rank == 0 else []


def current_rows(exp: Experiment, runs):
    """The runs.csv rows made by the experiment's current settings (rows of changed settings stay in the file)."""
    if not len(runs):
        return runs
    keep = runs["dataset"].isin(())  # no row yet; each variant adds the rows its settings make
    for name, one in variants(exp).items():
        expected = set().union(*(expected_hashes(one, d) for d in exp.dataset_names()))
        keep |= runs["config_hash"].astype(str).isin(expected) & (runs[VARIANT] == name)
    return runs[keep & runs["dataset"].isin(exp.dataset_names())]


def setting_text(w: float, params: str) -> str:
    return " ".join(x for x in ("" if w != w else f"w={w:g}", params) if x)


def grid_name(run: RunSpec) -> str:
    return f"{run.spec.slug()}-seed{run.seed}.png"


def sample_grid_figures(exp: Experiment, results_dir: Path, board, variant: str = ONE) -> dict:
    """Per dataset, sample grids side by side (first report seed): fine-tune only, and each method at its
    selected w and at each fixed w (``exp``: the variant's experiment; its grids and plots in folders of its name)."""
    names = {"none": "fine-tune only", "cfg": "CFG", "dog": "DoG"}
    seed = exp.report.seeds[0]
    figures = {}
    for dataset in exp.dataset_names():
        panels = {}
        best = board[(board["dataset"] == dataset) & (board["rule"] == "best w")] if len(board) else board
        choice = {(dataset, r.method): (float(r.w), r.params if isinstance(r.params, str) else "")
                  for r in best.itertuples()} if len(best) else {}
        for label, rule, spec in report_plan(exp, dataset, choice):
            grid = results_dir / dataset / "grids" / variant / grid_name(run_spec(dataset, label, spec, seed))
            if grid.exists():
                panels[f"{names.get(label, label)} {rule} ({spec.describe()})"] = grid
        if panels:
            figures[f"samples_{dataset}" + (f"_{variant}" if variant else "")] = compose_sample_grids(
                panels, results_dir / "plots" / variant / f"samples_{dataset}.png",
                title=f"{dataset}: report seed {seed}; w chosen by {exp.evaluation.select_by} on the selection seeds")
    return figures


def report(exp: Experiment, results_dir: Path, rows: list[dict], tracker) -> Optional[str]:
    """runs.csv (merged with earlier runs of this experiment), leaderboard.csv/.md, PROTOCOL.md, plots; returns the
    markdown."""
    runs = update_runs(results_dir / "runs.csv", [r for r in rows if r is not None])
    runs = current_rows(exp, runs)
    if not len(runs):
        return None
    log(f"report: leaderboard of {len(runs)} runs.csv rows ({exp.report.bootstrap} bootstrap resamples per "
        f"interval), PROTOCOL.md, plots{', W&B' if not isinstance(tracker, NullTracker) else ''}")
    cards = scored_sets(exp, results_dir, results_dir.parent / "cache")  # every set's metric card, loaded once
    board = with_design_and_compute(exp.design, variant_leaderboard(exp, runs, cards), runs)
    write_leaderboard(board, results_dir / "leaderboard.csv")
    markdown = variant_markdown(exp, board) if len(board) else "(no report sample sets evaluated yet)"
    experiments = variants(exp)
    real = ("are part of" if real_control_split(exp.evaluation.ref_split) == exp.evaluation.ref_split
            else "are not part of")
    atomic_write_text(results_dir / "leaderboard.md",
                      f"# {exp.name}\n\n{describe(next(iter(experiments.values())), board)} The real-data control's "
                      f"images {real} the reference statistics (reference: {exp.evaluation.ref_split} split)."
                      f"{describe_variants(exp)} Protocol: PROTOCOL.md.\n\n"
                      f"{markdown}\n")
    protocol = write_variant_protocol(exp, results_dir / "PROTOCOL.md", runs)
    figures = {}
    for name, one in experiments.items():  # one fine-tune: plots/; several: plots/<variant>/
        mine = runs[(runs[VARIANT] == name) & (runs["phase"] == "selection")]
        block = board[board[VARIANT] == name] if VARIANT in board.columns else board
        suffix = f"_{name}" if name else ""
        # every method whose grid holds the unguided point shares the fine-tune-only set there (w = 1 on its line)
        figures.update({f"{m}_vs_w{suffix}": p for m, p in plot_metrics_vs_w(
            mine, results_dir / "plots" / name, board=block,
            shared_w1=sorted(one.unguided_methods() - {"none"})).items()})
        figures.update(sample_grid_figures(one, results_dir, block, name))
    figures.update(neighbour_figures(exp, results_dir, runs[runs["phase"] == "report"], cards))  # also to W&B
    figures.update(design_figures(exp.design, board, exp.evaluation.select_by, results_dir / "plots"))
    tracker.log_summary(board, runs, figures, protocol=protocol)
    return markdown


def resolved_paths(exp: Experiment, results_dir: Path) -> dict:
    """Every location the run reads or writes, as this process resolves it (relative paths against the experiment
    file, defaults against the working directory): printed at start, kept in results/<exp>/paths.json."""
    def found(lookup):
        try:
            return str(lookup())
        except (UserError, CheckpointError) as e:
            return f"missing ({e})"
    paths = {"experiment_file": str(exp.path.resolve()) if exp.path else None, "working_directory": str(Path.cwd()),
             "results": str(results_dir.resolve()), "cache": str((results_dir.parent / "cache").resolve()),
             "data_root": str(exp.data_dir().resolve()),
             "datasets": {name: found(lambda n=name: locate_dataset(exp.dataset(n), exp.data_dir()))
                          for name in exp.dataset_names()},
             "source_checkpoint": found(lambda: resolve_checkpoint(exp.source_checkpoint(), download=False).resolve()),
             "autoencoder": exp.autoencoder_spec()}
    paths.update({k: v for k, v in exp.weight_paths().items() if v})
    return paths


def run_experiment(exp: Experiment, datasets: Optional[Sequence[str]] = None, stages: Sequence[str] = STAGE_ORDER,
                   device: Optional[str] = None, results_root=None, progress: bool = True,
                   finetunes: Optional[Sequence[str]] = None) -> Optional[str]:
    """Every stage of every dataset under each fine-tune variant (``finetunes``: a subset of their names), then the
    report of every variant whose rows exist."""
    device = setup(device or default_device())
    results_dir = exp.results_dir(results_root)
    results_dir.mkdir(parents=True, exist_ok=True)
    check_recorded_sources(exp, results_dir, say=log)  # a checkpoint replaced under the same path: one line, now
    atomic_write_text(results_dir / "config.yaml", exp.to_yaml())
    paths = resolved_paths(exp, results_dir)
    atomic_write_json(results_dir / "paths.json", paths)
    log(f"experiment file {paths['experiment_file']}; results in {paths['results']} (caches in {paths['cache']}; "
        f"every path: paths.json)")
    log(f"source {paths['source_checkpoint']}; data: "
        + "; ".join(f"{k} at {v}" for k, v in paths["datasets"].items()))
    datasets = list(datasets or exp.dataset_names())
    log(f"experiment {exp.name}: {len(datasets)} dataset(s), {len(exp.selection_runs(datasets[0]))} selection sample "
        f"sets each ({exp.selection_num_samples()} images), then the chosen settings on report seeds "
        f"{exp.report.seeds} ({exp.sampling.num_samples} images); device {device}")
    rank, _ = rank_world()
    tracker = make_tracker(exp, results_root) if rank == 0 else NullTracker()
    chosen = variants(exp, finetunes)
    check_adapter_targets(chosen)  # every variant's, before the first one runs
    if exp.finetunes is not None:
        log(f"fine-tunes {', '.join(chosen)} (of {', '.join(variant_names(exp))}), one after another")
    rows = []
    with tracker:
        for name, one in chosen.items():
            for dataset in datasets:
                rows += run_dataset(one, dataset, results_dir, device, stages, tracker, progress and rank == 0, name)
        markdown = report(exp, results_dir, rows, tracker) if "report" in stages and rank == 0 else None
    if markdown:
        print(f"\n{exp.name}: leaderboard ({results_dir / 'leaderboard.csv'})\n\n{markdown}\n")
    return markdown
