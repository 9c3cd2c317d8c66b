"""Checkpoints a run starts from: the shipped source carries its hash, a results folder records each source's hash
on first use, a sanity probe refuses a source that does not denoise the target, and finetune names the real problem
of a bad source before it looks for a VAE. Plus the OSError net of the command line."""
import errno
import json
import shutil
from argparse import Namespace

import pytest
import torch

from benchmark.cli import main
from benchmark.cli.oserrors import os_error_line
from benchmark.data import get_dataset
from benchmark.harness.loading import load_experiment
from benchmark.harness.sources import SOURCES_FILE, check_recorded_sources
from benchmark.io import IntegrityError
from benchmark.models import DiT, export_checkpoint, load_dit
from benchmark.models.checkpoint import CONTENT_HASH
from benchmark.models.settings import SourceSettings
from benchmark.training import RunOutput, TrainingSet, finetune
from benchmark.training.probe import PROBE_LIMIT, check_source
from benchmark.tracking import WandbSettings
from conftest import REPO, flip_weight_bytes, run_if, tiny_dit_config

pytestmark = pytest.mark.usefixtures("one_thread")
ASSETS = REPO / "benchmark" / "assets"
SHIPPED = ASSETS / "source_cifar10_dit.pt"


def test_every_shipped_checkpoint_carries_its_hash_and_a_flipped_copy_is_refused(tmp_path):
    shipped = sorted(ASSETS.glob("*.pt"))
    assert shipped, "benchmark/assets ships the default source"
    for path in shipped:
        assert isinstance(torch.load(path, weights_only=True, mmap=True).get(CONTENT_HASH), str), path
        load_dit(path)  # the hash checks out
    flip_weight_bytes(SHIPPED, tmp_path / "copy.pt", "blocks.2.mlp.fc1.weight")
    with pytest.raises(IntegrityError, match="copy.pt is corrupted: its content hash"):
        load_dit(tmp_path / "copy.pt")


def unhashed_copy(tmp_path, flip: str | None = None):
    obj = torch.load(SHIPPED, weights_only=True)
    obj.pop(CONTENT_HASH)
    torch.save(obj, tmp_path / "unhashed.pt")
    if flip is None:
        return tmp_path / "unhashed.pt"
    flip_weight_bytes(tmp_path / "unhashed.pt", tmp_path / "flipped.pt", flip)
    return tmp_path / "flipped.pt"


@pytest.mark.parametrize("tensor", ["blocks.0.mlp.fc1.weight", "blocks.3.attn.proj.weight", "final_layer.linear.weight",
                                    "t_embedder.mlp.2.weight"])
def test_the_probe_refuses_finite_but_broken_weights_and_passes_the_intact_source(tmp_path, tensor):
    intact = check_source(load_dit(SHIPPED), SHIPPED, TrainingSet("caltech101-32"), 32, "identity")
    assert intact < PROBE_LIMIT / 4  # measured 0.078: the limit has margin on this side
    broken = load_dit(unhashed_copy(tmp_path, tensor))
    assert all(torch.isfinite(p).all() for p in broken.parameters())  # nothing the NaN check could see
    with pytest.raises(IntegrityError) as e:
        check_source(broken, "flipped.pt", TrainingSet("caltech101-32"), 32, "identity")
    assert "\n" not in str(e.value) and "flipped.pt does not denoise caltech101-32" in str(e.value)


def test_random_weights_are_refused_unless_the_check_is_off(tmp_path):
    torch.manual_seed(0)
    export_checkpoint(DiT(**tiny_dit_config(input_size=32, num_classes=10)), tmp_path / "fresh.pt",
                      autoencoder="identity")
    settings = {"steps": 1, "global_batch_size": 2, "num_workers": 0, "checkpoint_every": 1}
    source = SourceSettings.from_checkpoint(str(tmp_path / "fresh.pt"))
    assert not source.sanity_check  # a bare path is not probed; the command line and the harness ask for it
    probed, data = source.replaced(sanity_check=True), TrainingSet("caltech101-32", max_images=4)
    out = RunOutput(tmp_path / "run", wandb=WandbSettings(enabled=False), progress=False)
    with pytest.raises(IntegrityError, match="source.sanity_check: false"):
        finetune(probed, data, out, settings)
    assert not (tmp_path / "run" / "run.json").exists()  # refused before anything was written
    finetune(source, data, out, settings)
    # a started run was probed when it started: continuing it does not probe again
    finetune(probed, data, out, {**settings, "steps": 2})


def test_finetune_reads_the_source_before_the_vae_and_takes_its_autoencoder(tmp_path, capsys):
    """Without --autoencoder the source's recorded one is used (identity here): no 'VAE not found' for another
    problem."""
    captured = {}
    from benchmark.cli import train as train_command

    monkey = pytest.MonkeyPatch()
    monkey.setattr(train_command, "finetune", lambda source, data, out, settings, launch, autoencoder:
                   captured.update(autoencoder=autoencoder, sanity_check=source.sanity_check))
    try:
        assert main(["finetune", "--source", str(SHIPPED), "--dataset", "caltech101-32", "--out",
                     str(tmp_path / "o"), "--no-wandb"]) == 0
    finally:
        monkey.undo()
    assert captured["autoencoder"] is None and captured["sanity_check"] is True  # finetune() reads the file's
    assert main(["finetune", "--source", str(unhashed_copy(tmp_path, "blocks.2.mlp.fc1.weight")), "--dataset",
                 "caltech101-32", "--out", str(tmp_path / "o2"), "--no-wandb", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "VAE" not in err and "does not denoise" in err


def test_a_results_folder_records_its_sources_and_refuses_a_changed_file(tmp_path):
    source = tmp_path / "source.pt"
    shutil.copyfile(SHIPPED, source)
    exp = load_experiment("default", [f"source.checkpoint={source}"])
    results = tmp_path / "results" / "default"
    hashes = check_recorded_sources(exp, results)
    record = json.loads((results / SOURCES_FILE).read_text())
    assert record[str(source.resolve())]["sha256"] == hashes[str(source.resolve())]
    assert check_recorded_sources(exp, results) == hashes  # unchanged: fine, and the record stays as it was
    flip_weight_bytes(SHIPPED, source, "blocks.0.mlp.fc2.weight")
    with pytest.raises(IntegrityError) as e:
        check_recorded_sources(exp, results)
    old, new = hashes[str(source.resolve())], e.value.args[0]
    assert "\n" not in new and "source.checkpoint" in new and old[:12] in new and "has changed since" in new
    assert json.loads((results / SOURCES_FILE).read_text()) == record  # the record is never overwritten
    missing = load_experiment("default", [f"source.checkpoint={tmp_path / 'not-yet.pt'}"])
    assert check_recorded_sources(missing, tmp_path / "other") == {}  # left to the stage that needs it


def test_the_generic_folder_dataset_prefers_its_own_folder_under_the_root(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "folder" / cls / "0.png")
    (tmp_path / "cifar10").mkdir()  # another dataset beside it: not a class
    images = get_dataset("folder", root=tmp_path)
    assert images.num_classes == 2 and len(images) == 2


@pytest.mark.parametrize("error, args, expected", [
    (OSError(errno.EROFS, "Read-only file system", "/x/res/tiny/.config.yaml.k2j4h8.tmp"),
     Namespace(results_root="/x/res", command="run"),
     "/x/res/tiny/config.yaml is on a read-only file system (from --results-root); point --results-root at"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/file/tiny"), Namespace(results_root="/x/file"),
     "/x/file/tiny has a file where a folder is expected (from --results-root)"),
    (PermissionError(errno.EACCES, "Permission denied", "/d/cub/a.jpg"), Namespace(overrides=["data_root=/d"]),
     "/d/cub/a.jpg is not accessible (permission denied) (from data_root); point data_root at"),
    (OSError(errno.ENOSPC, "No space left on device", "/y/out/x.png"), Namespace(out="/y/out"),
     "/y/out/x.png cannot be written: the disk is full (from --out); free some space and rerun the same command"),
    (OSError(errno.EIO, "Input/output error", "/z/q"), Namespace(), "/z/q cannot be used (Input/output error); fix"),
])
def test_os_errors_name_the_path_its_flag_and_the_fix(error, args, expected):
    assert os_error_line(error, args).startswith(expected)


@run_if(shared_data="caltech101/caltech101_32.npz")
def test_until_sample_says_what_it_skipped(tiny_experiment, capsys):
    path, results = tiny_experiment
    assert main(["run", "--exp", str(path), "--results-root", str(results), "--until", "sample", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "selection sample set(s) only; the report sets" in out and "--until report" in out
    assert not list((results / "tiny").glob("leaderboard*"))


@run_if(shared_data="caltech101/caltech101_32.npz")
def test_a_sweep_opens_its_storage_before_any_work(tiny_experiment, tmp_path, capsys):
    path, results = tiny_experiment
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert main(["sweep", "--exp", str(path), "--results-root", str(results), "--dataset", "folder",
                 "--storage", f"sqlite:///{blocked}/sweep.db", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.db" in err[0]
    assert not list((results / "tiny").glob("folder/finetune-*"))  # nothing was fine-tuned first
