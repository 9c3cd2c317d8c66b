"""The W&B runs a fine-tune and a whole experiment write offline, read back from W&B's own files: every run of an
experiment in results/<exp>/wandb, in the experiment's group, with its job type, tags and a complete config; the
fine-tune's training curves among them; one leaderboard run that a rerun updates."""
import pytest

from benchmark.cli import main
from benchmark.harness.identity import stage_hash
from benchmark.harness.loading import load_experiment
from benchmark.harness.stages import DatasetContext, stage_finetune
from benchmark.io import file_sha256
from benchmark.training import RunOutput, TrainingSet, finetune
from benchmark.tracking import WandbSettings
from conftest import run_if
from wandb_records import read_runs

pytestmark = [pytest.mark.usefixtures("one_thread"), run_if(shared_data="caltech101/caltech101_32.npz")]


def test_the_harness_files_the_fine_tune_with_the_experiment(tiny_experiment, tmp_path):
    path, results = tiny_experiment
    exp = load_experiment(path)
    results_dir = exp.results_dir(results)
    ema = stage_finetune(DatasetContext(exp, "folder", results_dir, "cpu", progress=False))
    assert not list(ema.parent.glob("wandb")), "the fine-tune's W&B run belongs in the experiment's wandb folder"
    (run,) = read_runs(results_dir)
    assert run["folder"].parent == results_dir / "wandb"
    assert (run["group"], run["job_type"], run["name"]) == ("tiny", "fine-tune", "folder-fine-tune")
    assert {"dataset:folder", "phase:fine-tune", "seed:0"} <= set(run["tags"])
    config = run["config"]
    assert config["experiment"] == "tiny" and config["dataset"] == "folder"
    assert config["steps"] == 3 and config["seed"] == 0 and config["settings"]["lr"] == exp.finetune.lr
    assert config["source"] == str((tmp_path / "source.pt").resolve())
    assert config["source_sha256"] == file_sha256(tmp_path / "source.pt")
    assert config["stage_hash"] == stage_hash(exp, "finetune", "folder") and ema.parent.name.endswith(config["stage_hash"])
    losses = [row["train/loss"] for row in run["history"] if "train/loss" in row]
    assert losses and all(loss > 0 for loss in losses)  # the training curve is in the run that gets uploaded
    assert max(row.get("trainer/global_step", 0) for row in run["history"]) >= 1

    # the standalone fine-tune keeps its W&B run in its own folder, with a job type and tags
    out = tmp_path / "standalone"
    finetune(exp.source.replaced(checkpoint=str(tmp_path / "source.pt")), TrainingSet("folder", exp.data_dir()),
             RunOutput(out, wandb=WandbSettings(mode="offline"), progress=False),
             {**exp.finetune.to_dict(), "steps": 1}, autoencoder="identity")
    (alone,) = read_runs(out)
    assert (alone["group"], alone["job_type"], alone["name"]) == ("", "fine-tune", "standalone")
    assert alone["config"]["steps"] == 1 and "experiment" not in alone["config"]


@pytest.mark.slow  # the whole tiny pipeline twice
def test_an_experiment_is_one_group_with_one_updated_leaderboard_run(tiny_experiment, capsys):
    path, results = tiny_experiment
    command = ["run", "--exp", str(path), "--results-root", str(results), "--no-progress"]
    assert main(command) == 0
    results_dir = results / "tiny"
    first = read_runs(results_dir)
    assert {run["group"] for run in first} == {"tiny"}
    jobs = [run["job_type"] for run in first]
    assert jobs.count("fine-tune") == 1 and jobs.count("report") == 1
    sample_sets = [run for run in first if run["job_type"] == "evaluate"]
    # 3 selection sets (none, cfg, dog), 1 report set, 2 controls (seed noise, real data)
    assert len(sample_sets) == 6
    assert {run["config"]["phase"] for run in sample_sets} == {"selection", "report", "control"}
    for run in sample_sets:
        config = run["config"]
        assert config["seed"] is not None and config["num_samples"] == 6 and config["stage_hash"]
        assert run["history"][0]["fd_effnet"] > 0
        w = [] if config["method"] == "real" else [f"w:{config['w']:g}"]  # the real images have no w
        assert {"dataset:folder", f"method:{config['method']}", f"seed:{config['seed']}", f"phase:{config['phase']}",
                *w} == set(run["tags"])
    assert "wandb sync " + str(results_dir / "wandb") + "/offline-run-*" in capsys.readouterr().err

    assert main(command) == 0  # nothing new: only the leaderboard run is updated
    again = read_runs(results_dir)
    new = again[len(first):]
    assert [run["job_type"] for run in new] == ["report"]
    (report_id,) = {run["id"] for run in again if run["job_type"] == "report"}
    assert [run["history"][0]["_step"] for run in again if run["id"] == report_id] == [0, 1]
