"""``dogbench evaluate`` as a standalone tool: any image folder (png, jpg, webp; nested) or .npz for samples and
reference, the metrics that work here by default, the real-data floor, and dogbench sample folders checked
before they are scored (``--allow-partial`` recorded in the JSON)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark.metrics.evaluate as evaluate_module
from benchmark.cli import main
from benchmark.metrics.evaluate import available_metrics, real_control_images
from benchmark.metrics.features import ImageSet, load_image_array
from benchmark.sampling.writer import SampleFolder
from test_metrics_evaluate import tiny_network

pytestmark = pytest.mark.usefixtures("one_thread")
REAL_BUILD_NETWORK = evaluate_module.build_network
EFFNET = ["fd_effnet", "precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet"]
HERE = ["fd_effnet", "prdc_effnet", "kid_effnet", "class_kid_effnet", "vendi_effnet", "copy_effnet"]


def pictures(n, seed, bright=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 160, size=(n, 1, 1, 3)) + bright
    return np.clip(base + rng.normal(0, 30, size=(n, 16, 16, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def no_hub_weights(tmp_path, monkeypatch):
    """An empty torch hub: no Inception, no DINOv2 (what a fresh offline machine has); the EfficientNet-Lite0 space
    computed by a tiny network through the same interface (the real one is tested in test_metrics_effnet.py)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(evaluate_module, "build_network", lambda space, **kw: tiny_network(name=f"tiny_{space}"))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    ref, same, other = pictures(30, 0), pictures(12, 1), pictures(12, 2, bright=90)
    (root / "ref" / "a").mkdir(parents=True)
    for i, im in enumerate(ref):  # nested folders, three formats
        Image.fromarray(im).save(root / "ref" / ("a" if i % 2 else "") / f"{i}.{('png', 'jpg', 'webp')[i % 3]}")
    np.savez(root / "ref.npz", arr_0=ref)
    (root / "same").mkdir()
    for i, im in enumerate(same):
        Image.fromarray(im).save(root / "same" / f"{i}.png")
    np.savez(root / "same.npz", images=same)
    np.savez_compressed(root / "same-compressed.npz", arr_0=same)
    np.savez(root / "other.npz", arr_0=other)
    return root


def evaluate(sets, *argv):
    return main(["evaluate", "--device", "cpu", "--cache-dir", str(sets / "cache"), *argv])


def test_any_folder_or_npz_against_any_reference(sets, capsys):
    assert available_metrics() == HERE
    assert evaluate(sets, "--samples", str(sets / "same"), "--reference", str(sets / "ref")) == 0
    out = capsys.readouterr().out
    assert "fd_effnet" in out and f"wrote {sets / 'same' / 'metrics.json'}" in out
    folder = json.loads((sets / "same" / "metrics.json").read_text())
    # the default: the metrics that work here with these inputs (no labels, no fine-tuning images: no class KID, no
    # copy rate), each with its interval
    assert sorted(folder["metrics"]) == sorted(EFFNET + ["kid_effnet", "vendi_effnet"])
    assert set(folder["intervals"]) == set(folder["metrics"]) and folder["intervals"]["kid_effnet"]["resamples"] == 200
    assert folder["n_samples"] == 12 and folder["protocol"]["fd_effnet"]["n_reference"] == 30
    assert folder["reference_path"] == str(sets / "ref")

    # the same pixels as an .npz (key images; arr_0 compressed) score exactly the same, written beside it
    for name in ("same.npz", "same-compressed.npz"):
        assert evaluate(sets, "--samples", str(sets / name), "--reference", str(sets / "ref"), "--metrics",
                        "fd_effnet") == 0
        beside = json.loads((sets / name.replace(".npz", ".metrics.json")).read_text())
        assert beside["metrics"]["fd_effnet"] == pytest.approx(folder["metrics"]["fd_effnet"], rel=1e-6)
    assert isinstance(load_image_array(sets / "same.npz"), np.memmap)

    # a different distribution scores worse, against a folder or an .npz reference of the same images
    assert evaluate(sets, "--samples", str(sets / "other.npz"), "--reference", str(sets / "ref.npz"), "--out",
                    str(sets / "other.json"), "--metrics", "fd_effnet") == 0
    assert json.loads((sets / "other.json").read_text())["metrics"]["fd_effnet"] > folder["metrics"]["fd_effnet"]


def test_unavailable_metrics_name_the_ones_that_work(sets, capsys, monkeypatch):
    monkeypatch.setattr(evaluate_module, "build_network", REAL_BUILD_NETWORK)
    assert evaluate(sets, "--samples", str(sets / "same"), "--reference", str(sets / "ref"), "--metrics", "fid") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pt_inception-2015-12-05-6726825d.pth" in err
    assert err.endswith(f"metrics that work here: {','.join(HERE)}")


def test_the_real_data_floor(sets, capsys):
    assert evaluate(sets, "--samples", str(sets / "same.npz"), "--reference", str(sets / "ref"), "--real",
                    "--metrics", "fd_effnet", "--out", str(sets / "real.json")) == 0
    assert "real floor" in capsys.readouterr().out
    result = json.loads((sets / "real.json").read_text())
    floor = result["real_floor"]
    assert floor["n"] == 12 and floor["split"] == "all" and floor["seed"] == 0
    assert floor["metrics"]["fd_effnet"] < result["metrics"]["fd_effnet"] * 3  # same scale as a good sample set
    # the floor alone: --num-real without samples; the draw is the harness's (seed, size)-seeded subset
    assert evaluate(sets, "--reference", str(sets / "ref"), "--real", "--num-real", "12", "--metrics",
                    "fd_effnet") == 0
    assert "real floor" in capsys.readouterr().out
    images, drawn = real_control_images(ImageSet(sets / "ref"), 12, seed=0)
    rows = np.sort(np.random.default_rng([0, 30]).choice(30, 12, replace=False))
    assert images.indices == rows.tolist() and drawn["n"] == 12


def test_real_floor_of_a_registered_dataset_comes_from_the_other_split(sets, tmp_path):
    for split, n in (("train", 6), ("test", 4)):
        for c in range(2):
            (tmp_path / "data" / split / f"c{c}").mkdir(parents=True)
            for i, im in enumerate(pictures(n // 2, 10 * c + n)):
                Image.fromarray(im).save(tmp_path / "data" / split / f"c{c}" / f"{i}.png")
    images, drawn = real_control_images("folder", 4, ref_split="train", data_root=tmp_path / "data")
    assert drawn["split"] == "test" and len(images) == 4
    assert evaluate(sets, "--samples", str(sets / "same"), "--dataset", "folder", "--data-root",
                    str(tmp_path / "data"), "--ref-split", "train", "--real", "--num-real", "4", "--metrics",
                    "fd_effnet", "--out", str(tmp_path / "m.json")) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["ref_split"] == "train" and result["real_floor"]["split"] == "test"


def test_sample_folders_are_scored_only_when_complete_unless_allow_partial(sets, tmp_path, capsys):
    folder = SampleFolder(tmp_path / "s", 12, {"made": "by dogbench sample"}, shard_size=5).open()
    folder.write(range(9), pictures(12, 1)[:9], labels=[0] * 9)
    cmd = ["--samples", str(folder.root), "--reference", str(sets / "ref"), "--metrics", "fd_effnet"]
    assert evaluate(sets, *cmd) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "9 of 12 images intact" in err and "sampling did not finish" in err
    assert "--allow-partial" in err and not (folder.root / "metrics.json").exists()
    assert evaluate(sets, *cmd, "--allow-partial") == 0
    assert "partial: 9 of 12 images scored" in capsys.readouterr().out
    result = json.loads((folder.root / "metrics.json").read_text())
    assert result["partial"] is True and result["n_samples"] == 9 and result["n_expected"] == 12
    assert result["n_missing"] == 3

    folder.write(range(9, 12), pictures(12, 1)[9:], labels=[1] * 3)
    folder.mark_complete()
    assert evaluate(sets, *cmd) == 0
    capsys.readouterr()
    result = json.loads((folder.root / "metrics.json").read_text())
    assert result["partial"] is False and result["n_samples"] == 12
    # a complete set with the same pixels as same/ scores the same
    same = json.loads((sets / "same" / "metrics.json").read_text())["metrics"]["fd_effnet"]
    assert result["metrics"]["fd_effnet"] == pytest.approx(same, rel=1e-6)

    png = folder.path(3)
    png.write_bytes(png.read_bytes()[:-30])  # truncated after it was recorded
    assert evaluate(sets, *cmd) == 1
    assert "1 corrupted (e.g. shard_000/000003.png: its sha256 differs" in capsys.readouterr().err


def test_a_truncated_image_in_a_plain_folder_is_one_line(sets, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, im in enumerate(pictures(8, 3)):
        Image.fromarray(im).save(plain / f"{i}.png")
    (plain / "3.png").write_bytes((plain / "3.png").read_bytes()[:60])
    assert evaluate(sets, "--samples", str(plain), "--reference", str(sets / "ref"), "--metrics", "fd_effnet") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"dogbench evaluate: error: {plain / '3.png'} cannot be decoded")
