"""Your own data and where things go: an experiment with two datasets of its own (class folders, given by path
relative to the experiment file) runs end to end under their names; `dogbench prepare --exp` checks them; a
second checkout with the same environment reads its own experiments and writes its own results."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.harness.identity import stage_hash
from benchmark.harness.loading import load_experiment
from conftest import SHARED_DATA, run_if

pytestmark = [pytest.mark.usefixtures("one_thread"), run_if(shared_data="caltech101/caltech101_32.npz")]


def class_folders(target, source_classes, per_class=4, suffix=".png", split_dirs=False):
    """Real 32x32 Caltech-101 images as <class>/*.png (or train/<class>/ and test/<class>/)."""
    data = np.load(SHARED_DATA / "caltech101" / "caltech101_32.npz")
    for k, cls in enumerate(source_classes):
        idx = np.flatnonzero(data["labels"] == cls)[:per_class]
        for j, i in enumerate(idx):
            folder = target / (("train" if j % 2 == 0 else "test") if split_dirs else "") / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data["images"][i]).save(folder / f"{i}{suffix}")


@pytest.fixture
def own_data_experiment(tiny_experiment):
    """tiny_experiment with two datasets of its own instead of `folder`, paths relative to the experiment file."""
    path, results = tiny_experiment
    class_folders(path.parent / "data" / "birds", [3, 4], suffix=".jpg")
    class_folders(path.parent / "data" / "boats", [5, 6, 7], split_dirs=True)
    config = yaml.safe_load(path.read_text())
    config.pop("data_root")
    config["datasets"] = [{"name": "birds", "path": "data/birds", "layout": "folder"},
                          {"name": "boats", "path": "data/boats"}]
    config["methods"] = ["none", "dog"]
    config["tracking"] = {"wandb": {"enabled": False}}
    path.write_text(yaml.safe_dump(config))
    return path, results


def test_two_datasets_of_your_own_run_end_to_end_under_their_names(own_data_experiment):
    path, results = own_data_experiment
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--no-progress"]) == 0
    board = pd.read_csv(results / "tiny" / "leaderboard.csv")
    assert set(board["dataset"]) == {"birds", "boats", "average", "paper summary"}
    runs = pd.read_csv(results / "tiny" / "runs.csv")
    assert set(runs["dataset"]) == {"birds", "boats"}
    assert (results / "tiny" / "birds").is_dir() and (results / "tiny" / "boats").is_dir()
    assert "birds" in (results / "tiny" / "leaderboard.md").read_text()
    paths = json.loads((results / "tiny" / "paths.json").read_text())
    assert paths["datasets"] == {"birds": str(path.parent / "data" / "birds"),
                                 "boats": str(path.parent / "data" / "boats")}
    assert paths["experiment_file"] == str(path) and paths["results"] == str(results / "tiny")


def test_your_own_dataset_is_identified_by_its_files(own_data_experiment):
    path, _ = own_data_experiment
    before = stage_hash(load_experiment(path), "finetune", "birds")
    assert stage_hash(load_experiment(path), "finetune", "birds") == before
    class_folders(path.parent / "data" / "birds", [8], suffix=".jpg")  # one more class
    assert stage_hash(load_experiment(path), "finetune", "birds") != before


@pytest.mark.parametrize("entry, message", [
    ({"name": "caltech101", "path": "x"}, "is a registered dataset"),
    ({"name": "birds", "path": "x", "layout": "imagenet"}, "unknown layout 'imagenet'"),
    ({"name": "my birds", "path": "x"}, "names folders"),
    ({"name": "plots", "path": "x"}, "a folder or a row of the experiment's results"),
    ({"path": "x"}, "name"),
])
def test_bad_entries_are_one_line_errors(own_data_experiment, entry, message):
    path, _ = own_data_experiment
    config = yaml.safe_load(path.read_text())
    config["datasets"] = [entry]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert "\n" not in str(info.value)


def test_prepare_checks_every_dataset_of_an_experiment(own_data_experiment, capsys):
    path, results = own_data_experiment
    assert main(["prepare", "--exp", str(path)]) == 0
    out = capsys.readouterr().out
    assert "birds at" in out and "2/2 classes" in out and "boats at" in out and "3/3 classes" in out
    assert main(["prepare", "boats", "--exp", str(path)]) == 0
    (path.parent / "data" / "boats").rename(path.parent / "data" / "ships")
    assert main(["prepare", "--exp", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"dataset boats: {path.parent / 'data' / 'boats'} does not exist" in out
    code = main(["run", "--exp", str(path), "--stages", "prepare", "--results-root", str(results), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "dataset boats:" in err and "does not exist" in err


def test_a_second_checkout_reads_its_own_experiments_and_writes_its_own_results(tiny_experiment, tmp_path,
                                                                                monkeypatch):
    """Run from a folder that is not the installed checkout, with no --results-root: ./experiments is searched
    first and results go to ./results there."""
    path, _ = tiny_experiment
    checkout = tmp_path / "second-checkout"
    (checkout / "experiments").mkdir(parents=True)
    config = yaml.safe_load(path.read_text())
    config["tracking"] = {"wandb": {"enabled": False}}
    (checkout / "experiments" / "default.yaml").write_text(yaml.safe_dump({**config, "name": "default"}))
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("DOGBENCH_RESULTS", raising=False)
    assert main(["run", "--exp", "default", "--until", "prepare", "--no-progress"]) == 0
    paths = json.loads((checkout / "results" / "default" / "paths.json").read_text())
    assert paths["experiment_file"] == str(checkout / "experiments" / "default.yaml")
    assert paths["results"] == str(checkout / "results" / "default")
    monkeypatch.setenv("DOGBENCH_RESULTS", str(tmp_path / "elsewhere"))
    assert main(["run", "--exp", "default", "--until", "prepare", "--no-progress"]) == 0
    assert (tmp_path / "elsewhere" / "default" / "paths.json").is_file()
