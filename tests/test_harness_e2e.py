"""The whole pipeline on a tiny experiment: a tiny random source DiT, a few real 32x32 Caltech-101 images in a
class-folder dataset, fd_effnet, two w values. Then resume after a kill in each stage, and config invalidation."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from benchmark.cli import main
from benchmark.models import DiT, export_checkpoint
from boards import comparable_board
from conftest import run_if, tiny_dit_config

pytestmark = [pytest.mark.usefixtures("one_thread"), run_if(shared_data="caltech101/caltech101_32.npz")]


@pytest.fixture
def experiment(tiny_experiment):
    return tiny_experiment


def run(path, results, *overrides):
    return main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress", *overrides])


def pngs(results):
    return {p: p.stat().st_mtime_ns for p in (results / "tiny").rglob("shard_*/*.png")}


def test_pipeline_end_to_end_then_rerun_skips_everything(experiment):
    path, results = experiment
    assert run(path, results) == 0
    out = results / "tiny"
    runs = pd.read_csv(out / "runs.csv")
    selection = runs[runs["phase"] == "selection"]
    assert sorted(zip(selection["method"], selection["w"], selection["seed"])) == \
        [("cfg", 2.0, 0), ("dog", 2.0, 0), ("none", 1.0, 0)]
    report = runs[runs["phase"] == "report"]
    assert set(report["seed"]) == {1} and "none" in set(report["method"])  # fresh seeds, never seed 0
    control = runs[runs["phase"] == "control"]
    assert sorted(zip(control["method"], control["seed"])) == [("none", 2), ("real", 1)]  # seed noise, real floor
    assert runs["fd_effnet"].notna().all() and (runs["fd_effnet"] > 0).all()
    assert (runs["num_samples"] == 6).all() and runs["finetuned_sha256"].dropna().nunique() == 1
    # compute: forwards per image = steps (3) unguided, twice that for CFG and DoG; measured time and device
    generated = runs[runs["method"] != "real"]
    nfe = {(m, w): n for m, w, n in zip(generated["method"], generated["w"], generated["nfe"])}
    assert nfe[("none", 1.0)] == 3 and nfe[("cfg", 2.0)] == nfe[("dog", 2.0)] == 6
    assert (generated["sampling_s_per_image"] > 0).all() and generated["sampling_device"].str.startswith("CPU").all()
    assert (generated["flops_per_image"] / generated["nfe"]).nunique() == 1  # one forward's FLOPs, the tiny DiT's
    assert runs.loc[runs["method"] == "real", "nfe"].isna().all()
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"none", "cfg", "dog", "real"} <= set(board["method"]) and "seed noise" in set(board["rule"])
    assert "fd_effnet_improvement_vs_cfg_pct_low" in board and "fd_effnet_selection" in board
    # every reported number is the report seeds' value, never the selection seed's
    dog = board[(board["method"] == "dog") & (board["rule"] == "best w")].iloc[0]
    reported = report[(report["method"] == ("none" if dog["w"] == 1.0 else "dog")) & (report["w"] == dog["w"])]
    assert dog["fd_effnet"] == pytest.approx(reported["fd_effnet"].iloc[0], rel=1e-6)  # same samples, fast eigen path
    assert (out / "PROTOCOL.md").read_text().count("\n|") > 15
    assert (out / "plots" / "fd_effnet_vs_w.png").exists() and (out / "plots" / "samples_folder.png").exists()
    assert (out / "plots" / "pareto_folder.png").exists() and not (out / "plots" / "design_folder.png").exists()
    assert set(board.loc[board["method"] == "dog", "nfe"]) <= {3.0, 6.0}  # w = 1 chosen: the unguided set's
    assert "report seeds [1]" in (out / "leaderboard.md").read_text()
    assert list((out / "wandb").glob("offline-run-*"))  # W&B offline run directories
    sets = {p.parent.parent for p in pngs(results)}
    assert len(pngs(results)) == 6 * len(sets) and len(sets) >= 5

    before = pngs(results)
    assert run(path, results) == 0  # everything is done: nothing is recomputed
    assert pngs(results) == before
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv"), board)

    # a sampling change redoes samples and metrics, not the fine-tune
    assert run(path, results, "sampling.steps=2") == 0
    assert len(list((out / "folder").glob("finetune-*"))) == 1
    after = pngs(results)
    assert len(after) > len(before) and all(after[p] == t for p, t in before.items())  # new sets beside the old


@pytest.mark.slow  # kill-and-resume: a few runs of the pipeline each
@pytest.mark.parametrize("stage", ["sample", "finetune", "evaluate", "report"])
def test_kill_in_any_stage_then_rerun_gives_the_same_leaderboard(experiment, monkeypatch, stage, tmp_path):
    path, results = experiment
    assert run(path, results) == 0
    reference = comparable_board(results / "tiny" / "leaderboard.csv")

    import benchmark.harness.run as harness_run
    import benchmark.harness.stages as stages

    killed = tmp_path / "killed"
    calls = {"n": 0}

    def dies_on_second_call(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return original(*args, **kwargs)
        return wrapper

    target = {"finetune": (stages, "stage_sample"),  # dies right after fine-tuning
              "sample": (stages.SampleFolder, "write"),
              "evaluate": (stages, "stage_evaluate"),
              "report": (harness_run, "report")}[stage]
    if stage == "report":
        monkeypatch.setattr(*target, lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    elif stage == "evaluate":
        monkeypatch.setattr(harness_run, "stage_evaluate", dies_on_second_call(stages.stage_evaluate))
    elif stage == "finetune":
        monkeypatch.setattr(harness_run, "stage_sample", dies_on_second_call(stages.stage_sample))
        calls["n"] = 1
    else:
        monkeypatch.setattr(*target, dies_on_second_call(getattr(*target)))
    assert run(path, killed) == 130
    monkeypatch.undo()
    assert run(path, killed) == 0
    pd.testing.assert_frame_equal(comparable_board(killed / "tiny" / "leaderboard.csv"), reference)


@pytest.mark.slow
def test_latent_space_pipeline_with_a_tiny_vae(experiment, tiny_vae_dir):
    """The paper's path (VAE latents, cached encodings, decode before evaluation) with a tiny random AutoencoderKL
    standing in for sd-vae-ft-ema (2x downsampling, 4 latent channels)."""
    path, results = experiment
    config = yaml.safe_load(path.read_text())
    torch.manual_seed(0)
    source = DiT(**tiny_dit_config(in_channels=4, input_size=8))
    export_checkpoint(source, path.parent / "latent_source.pt", autoencoder=str(tiny_vae_dir))
    config.update(autoencoder=str(tiny_vae_dir), name="tiny-latent")
    config["source"].update(checkpoint=str(path.parent / "latent_source.pt"), image_size=16,
                            model=tiny_dit_config(in_channels=4, input_size=8))
    config["sampling"]["guided_channels"] = 3
    config["sampling"]["clip_denoised"] = False
    path.write_text(yaml.safe_dump(config))
    assert run(path, results) == 0
    out = results / "tiny-latent"
    assert list((results / "cache" / "latents").rglob("*")), "the latent cache was built"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs[runs["phase"] == "selection"]) == 3 and runs["fd_effnet"].notna().all()
    with Image.open(next((out / "folder" / "samples").rglob("*.png"))) as image:
        assert image.size == (16, 16)  # decoded back to pixels


@pytest.mark.slow  # two processes
def test_two_optuna_workers_share_one_study(experiment):
    """Two `dogbench sweep` processes on one SQLite storage: the trial budget is shared, no trial is lost or left
    running, low-fidelity pruning runs, the best w is re-scored on the report seeds, and everything lands in the
    study's own folder: the experiment's grid results are not touched."""
    import os
    import subprocess
    import sys

    import optuna

    path, results = experiment
    assert run(path, results) == 0  # the grid experiment first: the sweep must leave its outputs alone
    grid = {name: (results / "tiny" / name).read_bytes() for name in ("leaderboard.csv", "leaderboard.md", "runs.csv")}
    storage = f"sqlite:///{results / 'shared.db'}"
    cmd = [sys.executable, "-m", "benchmark.cli", "sweep", "--exp", str(path), "--dataset", "folder", "--method", "dog",
           "--total-trials", "4", "--storage", storage, "--results-root", str(results), "--no-progress",
           "sweep.low_fidelity_samples=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    workers = [subprocess.Popen(cmd + ["--worker", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n----\n".join(outputs)
    assert "optuna-dashboard sqlite:///" in outputs[0]  # the storage and how to look at it
    study = optuna.load_study(study_name="tiny/folder/dog/fd_effnet", storage=storage)
    states = [t.state for t in study.trials]
    finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert 4 <= len(finished) <= 5 and len(finished) == len(states)  # none failed or left running
    assert all(1.0 <= t.params["w"] <= 2.0 for t in study.trials)
    folder = results / "tiny" / "sweeps" / "folder-dog-fd_effnet"
    summary = pd.read_csv(folder.parent / "summary.csv")
    assert summary.loc[0, "study"] == "tiny/folder/dog/fd_effnet"
    assert summary.loc[0, "best_w"] == round(study.best_params["w"], 4)
    runs = pd.read_csv(folder / "runs.csv")
    complete_w = {round(t.params["w"], 4) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    trials = runs[runs["phase"] == "selection"]
    assert set(trials["w"]) == complete_w and set(trials["seed"]) == {0}  # no lost update
    assert set(runs.loc[runs["phase"] == "report", "seed"]) == {1}  # the best w, re-scored on fresh samples
    board = pd.read_csv(folder / "leaderboard.csv")
    dog = board[(board["dataset"] == "folder") & (board["method"] == "dog")].iloc[0]
    assert dog["w"] == round(study.best_params["w"], 4) and np.isfinite(dog["fd_effnet_low"])
    assert {name: (results / "tiny" / name).read_bytes() for name in grid} == grid  # the grid's files unchanged
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "pass --trials N to run N more" in again.stdout + again.stderr


def test_sweep_rejects_bad_input_in_one_line(experiment, capsys):
    path, results = experiment
    base = ["sweep", "--exp", str(path), "--results-root", str(results)]
    assert main(base + ["--dataset", "cub200"]) == 1
    assert main(base + ["--dataset", "folder", "--metric", "fid"]) == 1
    assert main(base + ["--dataset", "folder", "--storage", "postgresql://nobody@127.0.0.1:1/x"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 3 and "not in experiment" in errors[0] and "fid" in errors[1]


@pytest.mark.slow
def test_a_users_own_method_and_a_two_parameter_method_end_to_end(experiment):
    """A method from module:attribute (tests/guidance_plugin.py) and cfg+dog with a 2-D grid, through `dogbench run`:
    both selected on the selection seed, scored on the report seed, compared with CFG and fine-tune only."""
    path, results = experiment
    config = yaml.safe_load(path.read_text())
    config["methods"] = ["none", "cfg", {"name": "guidance_plugin:mixed_null", "label": "mixed", "params": {"mix": 0.3},
                                         "grid": {"w": [2.0]}},
                         {"name": "cfg+dog", "grid": {"w_cfg": [1.0, 2.0], "w_dog": [2.0]}}]
    path.write_text(yaml.safe_dump(config))
    assert run(path, results) == 0
    runs = pd.read_csv(results / "tiny" / "runs.csv", keep_default_na=False, na_values=[""])
    selection = runs[runs["phase"] == "selection"]
    assert {"mixed", "cfg+dog"} <= set(selection["method"])
    assert set(selection.loc[selection["method"] == "cfg+dog", "params"]) == {"w_cfg=1 w_dog=2", "w_cfg=2 w_dog=2"}
    assert set(selection.loc[selection["method"] == "mixed", "params"]) == {"mix=0.3"}
    board = pd.read_csv(results / "tiny" / "leaderboard.csv", keep_default_na=False, na_values=[""])
    best = board[board["rule"] == "best w"].set_index("method")
    assert {"mixed", "cfg+dog", "cfg"} <= set(best.index)
    assert np.isfinite(best.loc["mixed", "fd_effnet_diff_vs_cfg"]) and np.isfinite(best.loc["cfg+dog", "fd_effnet_low"])
    assert best.loc["cfg+dog", "params"] in ("w_cfg=1 w_dog=2", "w_cfg=2 w_dog=2")


@pytest.mark.slow
def test_a_design_grid_end_to_end(experiment):
    """design: {negative: [cfg, icg], rule: [linear, cfg-zero-star]} beside cfg: four cells chosen and reported like
    any method, the axes in runs.csv and the leaderboard, the heat map drawn; cfg+linear@constant is cfg's spec and
    shares its sample sets."""
    path, results = experiment
    config = yaml.safe_load(path.read_text())
    config["methods"] = ["none", "cfg"]
    config["design"] = {"negative": ["cfg", "icg"], "rule": ["linear", "cfg-zero-star"]}
    config["report"] = {"fixed_w": [2.0]}
    path.write_text(yaml.safe_dump(config))
    assert run(path, results) == 0
    out = results / "tiny"
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False, na_values=[""])
    cells = runs[runs["design_negative"].notna()]
    assert set(cells["method"]) == {"cfg+linear@constant", "cfg+cfg-zero-star@constant", "icg+linear@constant",
                                    "icg+cfg-zero-star@constant"}
    assert set(zip(cells["design_negative"], cells["design_rule"])) == {
        ("cfg", "linear"), ("cfg", "cfg-zero-star"), ("icg", "linear"), ("icg", "cfg-zero-star")}
    same = runs[(runs["phase"] == "selection") & runs["method"].isin(["cfg", "cfg+linear@constant"])]
    assert same.groupby("w")["sample_dir"].nunique().eq(1).all()  # one sample set per spec
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert {"design_negative", "design_rule", "design_schedule", "nfe"} <= set(board.columns)
    assert (out / "plots" / "design_folder.png").exists() and (out / "plots" / "pareto_folder.png").exists()
    assert (out / "plots" / "design_folder_w2.png").exists()  # every cell at the fixed w against CFG at it
    fixed = board[board["rule"] == "w=2"].set_index("method")
    assert fixed.loc["cfg+linear@constant", "fd_effnet_diff_vs_cfg"] == 0  # cfg's own spec: the same sample set


CARD = ["fd_effnet", "prdc_effnet", "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"]


@pytest.mark.slow  # a whole run with the card's extra real-image passes
def test_the_metric_card_end_to_end(experiment):
    """An own dataset with a train and a test split, scored with the whole card: every card column of the leaderboard
    has an interval and paired differences, the real control no copy rate, a neighbour figure per report set."""
    path, results = experiment
    config = yaml.safe_load(path.read_text())
    source = Path(config["data_root"])
    split = path.parent / "split-target"
    for k, folder in enumerate(sorted(source.iterdir())):  # 5 images per class: 3 fine-tuned on, 2 held out
        for i, image in enumerate(sorted(folder.iterdir())):
            (split / ("train" if i < 3 else "test") / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, split / ("train" if i < 3 else "test") / folder.name / image.name)
    config["datasets"] = [{"name": "birds", "path": str(split), "resolution": 32}]
    config["sampling"]["num_samples"] = 12
    config["evaluation"]["metrics"] = CARD
    path.write_text(yaml.safe_dump(config))
    assert run(path, results) == 0
    out = results / "tiny"
    board = pd.read_csv(out / "leaderboard.csv")
    dog = board[(board["method"] == "dog") & (board["rule"] == "best w")].iloc[0]
    for c in ("kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"):
        assert dog[f"{c}_low"] <= dog[c] <= dog[f"{c}_high"], c
        if dog["w"] != 1.0:  # at w = 1 DoG's row is the fine-tune-only set itself
            assert np.isfinite(dog[f"{c}_diff_vs_none"]) and f"{c}_improvement_vs_none_pct" not in board, c
    assert 0.0 <= dog["copy_effnet_low"] <= dog["copy_effnet_high"] <= 1.0
    real = board[board["method"] == "real"].iloc[0]
    assert np.isfinite(real["kid_effnet"]) and not np.isfinite(real["copy_effnet"])
    report = pd.read_csv(out / "runs.csv").query("phase == 'report'")
    figures = list((out / "plots").glob("neighbours_birds_*.png"))
    assert len(figures) == report["sample_dir"].nunique() > 0
    protocol = (out / "PROTOCOL.md").read_text()
    assert "## The metric card" in protocol and "held out = the test split" in protocol
