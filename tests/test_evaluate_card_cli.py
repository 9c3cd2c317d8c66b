"""``dogbench evaluate`` computes the card with intervals: an experiment's own dataset (--exp), the copy rate of a
folder against --train / --held-out, the class KID of a labelled sample folder, a note for a folder of mixed image
sizes, and a channels-first array refused with the transpose (not a float conversion)."""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import benchmark.metrics.evaluate as evaluate_module
from benchmark.cli import main
from benchmark.sampling.writer import SampleFolder
from test_metrics_evaluate import tiny_network

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def tiny_networks(tmp_path, monkeypatch):
    """No hub weights; the EfficientNet-Lite0 space computed by a tiny network through the same interface."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(evaluate_module, "build_network", lambda space, **kw: tiny_network(name=f"tiny_{space}"))


def pictures(n, seed, tint=(120, 120, 120), size=16):
    rng = np.random.default_rng(seed)
    base = np.asarray(tint, dtype=float)[None, None, None] + rng.uniform(-40, 40, size=(n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 25, size=(n, size, size, 3)), 0, 255).astype(np.uint8)


def save(folder, images, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{start + i}.png")
    return folder


def class_tree(root, per_split=(("train", 8), ("test", 6))):
    for split, n in per_split:
        for c, tint in enumerate(((200, 60, 60), (60, 200, 60))):
            save(root / split / f"class{c}", pictures(n, 10 * c + n, tint))
    return root


def evaluate(tmp_path, *argv):
    return main(["evaluate", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "30", *argv])


def test_an_experiments_own_dataset_and_its_card(tiny_experiment, tmp_path, capsys):
    path, _ = tiny_experiment
    config = yaml.safe_load(path.read_text())
    birds = class_tree(tmp_path / "birds")
    config["datasets"] = [{"name": "birds", "path": str(birds)}]
    path.write_text(yaml.safe_dump(config))
    samples = save(tmp_path / "samples", pictures(10, 3, (200, 60, 60)))
    assert evaluate(tmp_path, "--samples", str(samples), "--exp", str(path), "--dataset", "birds") == 0
    assert list(json.loads((samples / "metrics.json").read_text())["metrics"]) == ["fd_effnet"]  # the experiment's
    assert evaluate(tmp_path, "--samples", str(samples), "--exp", str(path), "--dataset", "birds", "--metrics",
                    "fd_effnet,kid_effnet,vendi_effnet,copy_effnet") == 0
    out = capsys.readouterr().out
    result = json.loads((samples / "metrics.json").read_text())
    assert result["dataset"] == "birds" and set(result["metrics"]) == {"fd_effnet", "kid_effnet", "vendi_effnet",
                                                                       "copy_effnet"}
    assert set(result["intervals"]) == set(result["metrics"]) and result["intervals"]["kid_effnet"]["resamples"] == 30
    low, high = result["intervals"]["vendi_effnet"]["low"], result["intervals"]["vendi_effnet"]["high"]
    assert low <= result["metrics"]["vendi_effnet"] <= high
    assert "[low, high]: 95% bootstrap interval" in out and "train features of birds/train" in out
    assert result["protocol"]["copy_effnet"]["train"]["split"] == "train" and "held out" in result["copy_rate_splits"]
    # a dataset the experiment does not have: one line naming its datasets
    assert evaluate(tmp_path, "--samples", str(samples), "--exp", str(path), "--dataset", "bird") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a dataset of experiment tiny" in err and "did you mean 'birds'" in err


def test_copy_rate_of_a_folder_against_train_and_held_out_folders(tmp_path, capsys):
    train = save(tmp_path / "train", pictures(20, 1))
    held_out = save(tmp_path / "held", pictures(20, 2))
    copies = save(tmp_path / "copies", [np.asarray(Image.open(tmp_path / "train" / f"{i}.png")) for i in range(8)])
    args = ["--reference", str(held_out), "--train", str(train), "--metrics", "copy_effnet,kid_effnet"]
    assert evaluate(tmp_path, "--samples", str(copies), *args, "--held-out", str(held_out)) == 0
    assert json.loads((copies / "metrics.json").read_text())["metrics"]["copy_effnet"] == 1.0
    # --train alone against a --reference folder: the reference is the held-out yardstick
    out = str(tmp_path / "o.json")
    assert evaluate(tmp_path, "--samples", str(copies), *args, "--bootstrap", "0", "--out", out) == 0
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["metrics"]["copy_effnet"] == 1.0 and "intervals" not in result
    capsys.readouterr()
    # without fine-tuning images the default card leaves the copy rate out; asking for it is one line
    assert evaluate(tmp_path, "--samples", str(copies), "--reference", str(held_out), "--metrics", "copy_effnet") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--train DIR|NPZ" in err


def test_a_labelled_sample_folder_gets_the_class_kid_by_default(tmp_path, capsys):
    data = class_tree(tmp_path / "data")
    folder = SampleFolder(tmp_path / "s", 8, {"made": "by dogbench sample"}).open()
    images = np.concatenate([pictures(4, 5, (200, 60, 60)), pictures(4, 6, (60, 200, 60))])
    folder.write(range(8), images, labels=[0] * 4 + [1] * 4)
    folder.mark_complete()
    assert evaluate(tmp_path, "--samples", str(folder.root), "--dataset", "folder", "--data-root", str(data)) == 0
    result = json.loads((folder.root / "metrics.json").read_text())
    assert {"class_kid_effnet", "copy_effnet", "kid_effnet", "vendi_effnet"} <= set(result["metrics"])
    assert result["protocol"]["class_kid_effnet"]["classes_scored"] == 2
    # the same images as a plain folder have no labels: no class KID by default, a line when asked for
    plain = save(tmp_path / "plain", images)
    assert evaluate(tmp_path, "--samples", str(plain), "--dataset", "folder", "--data-root", str(data)) == 0
    assert "class_kid_effnet" not in json.loads((plain / "metrics.json").read_text())["metrics"]
    capsys.readouterr()
    assert evaluate(tmp_path, "--samples", str(plain), "--dataset", "folder", "--data-root", str(data), "--metrics",
                    "class_kid_effnet") == 1
    assert "needs each sample's class" in capsys.readouterr().err
    # an .npz with its labels (arr_1, as the ADM sampler saves them) is labelled
    np.savez(tmp_path / "s.npz", arr_0=images, arr_1=np.array([0] * 4 + [1] * 4))
    assert evaluate(tmp_path, "--samples", str(tmp_path / "s.npz"), "--dataset", "folder", "--data-root", str(data),
                    "--metrics", "class_kid_effnet") == 0


def test_a_folder_of_mixed_sizes_is_scored_with_a_note(tmp_path, capsys):
    mixed = save(tmp_path / "mixed", pictures(6, 1, size=16))
    save(mixed, pictures(2, 2, size=24), start=6)
    reference = save(tmp_path / "ref", pictures(12, 3))
    assert evaluate(tmp_path, "--samples", str(mixed), "--reference", str(reference), "--metrics", "fd_effnet") == 0
    err = capsys.readouterr().err
    assert "note: --samples holds images of 2 sizes (16x16: 6, 24x24: 2)" in err
    assert json.loads((mixed / "metrics.json").read_text())["mixed_sizes"] == {"--samples": {"16x16": 6, "24x24": 2}}


def test_a_channels_first_array_is_told_to_transpose_not_to_convert_floats(tmp_path, capsys):
    np.savez(tmp_path / "chw.npz", arr_0=pictures(3, 0).transpose(0, 3, 1, 2))
    reference = save(tmp_path / "ref", pictures(12, 3))
    assert evaluate(tmp_path, "--samples", str(tmp_path / "chw.npz"), "--reference", str(reference)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "x.transpose(0, 2, 3, 1)" in err
    assert "np.clip" not in err and "astype" not in err  # it is uint8 already


def test_an_experiment_lists_card_metrics(tiny_experiment):
    from benchmark.harness.loading import load_experiment
    path, _ = tiny_experiment
    metrics = load_experiment(path, ["evaluation.metrics=[fd_effnet,kid_effnet,copy_effnet]"]).evaluation.metrics
    assert metrics == ["fd_effnet", "kid_effnet", "copy_effnet"]
