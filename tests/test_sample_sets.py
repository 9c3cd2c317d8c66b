"""Sample folders record each image's sha256 and label, resume after a kill or a full disk, and are read back
(complete, count, hashes) before they are evaluated; ``dogbench sample`` takes its defaults from the checkpoint
and samples chosen classes."""
import errno
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark.sampling.writer as writer_module
from benchmark.cli import main
from benchmark.cli.common import CHATTY_LOGGERS
from benchmark.io import file_sha256
from benchmark.models import DiT, export_checkpoint, reheaded
from benchmark.sampling import sample_inputs
from benchmark.sampling.sampler import labels_among
from benchmark.sampling.writer import INDEX, MANIFEST, SampleFolder, check_sample_set
from conftest import tiny_dit_config

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_each_image_is_recorded_with_its_hash_and_label_and_unrecorded_ones_are_made_again(tmp_path):
    folder = SampleFolder(tmp_path / "s", 5, {"a": 1}, shard_size=3).open()
    made = images(5)
    folder.write([0, 1, 2, 3], made[:4], labels=[1, 0, 2, 1])
    index = json.loads(folder.index_path(0).read_text())
    assert index["000001.png"] == {"sha256": file_sha256(folder.path(1)), "label": 0} and len(index) == 3
    assert folder.missing() == [4] and not check_sample_set(folder.root).ok
    folder.path(4).parent.mkdir(exist_ok=True)
    Image.fromarray(made[4]).save(folder.path(4))  # written, then killed before it was recorded
    assert folder.missing() == [4]
    folder.write([4], made[4:], [0])
    folder.mark_complete()
    check = check_sample_set(folder.root)
    assert check.ok and [p.name for p in check.paths] == [f"{i:06d}.png" for i in range(5)]
    assert check.labels.tolist() == [1, 0, 2, 1, 0] == folder.labels().tolist()
    assert sorted(p.name for p in folder.root.rglob("*") if p.is_file() and p.suffix != ".png") == \
        [".index.lock", ".index.lock", INDEX, INDEX, MANIFEST]


def test_the_check_names_missing_corrupted_and_undecodable_images(tmp_path):
    folder = SampleFolder(tmp_path / "s", 6, {"a": 1}).open()
    folder.write(range(6), images(6))
    folder.mark_complete()
    folder.path(2).unlink()
    data = bytearray(folder.path(4).read_bytes())
    data[-20] ^= 0xFF  # still decodes, perhaps; its hash no longer matches
    folder.path(4).write_bytes(bytes(data))
    check = check_sample_set(folder.root)
    assert check.missing == [2] and [p.name for p, _ in check.broken] == ["000004.png"]
    assert len(check.paths) == 4 and not check.ok
    message = check.error()
    assert "\n" not in message and "4 of 6 images intact, 1 missing (e.g. 000002.png), 1 corrupted" in message
    assert "sha256 differs" in message and "--allow-partial" in message
    with pytest.raises(Exception, match="--allow-partial"):
        folder.verified_paths()
    assert len(folder.verified_paths(allow_partial=True)) == 4
    # inside `dogbench run`, the advice names run, which has no --allow-partial
    with pytest.raises(Exception) as inside_run:
        folder.verified_paths(command="dogbench run", allow_flag=None)
    assert "rerun the same `dogbench run` command" in str(inside_run.value)
    assert "--allow-partial" not in str(inside_run.value) and "dogbench sample" not in str(inside_run.value)

    legacy = tmp_path / "legacy"  # a folder written before the index: its images must decode
    (legacy / "shard_000").mkdir(parents=True)
    for i, im in enumerate(images(3)):
        Image.fromarray(im).save(legacy / "shard_000" / f"{i:06d}.png")
    (legacy / MANIFEST).write_text(json.dumps({"config": {}, "num_samples": 3, "shard_size": 1000, "complete": True}))
    assert check_sample_set(legacy).ok
    png = legacy / "shard_000" / "000001.png"
    png.write_bytes(png.read_bytes()[:40])
    check = check_sample_set(legacy)
    assert check.broken[0][0] == png and "cannot be decoded" in check.broken[0][1]
    assert check_sample_set(tmp_path / "no-manifest") is None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    source = DiT(**tiny_dit_config())
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.2)
    export_checkpoint(reheaded(source, 3, seed=1), root / "ft.pt", autoencoder="identity")
    export_checkpoint(source, root / "pre.pt", autoencoder="identity")
    return root / "ft.pt", root / "pre.pt"


def sample_cmd(checkpoints, out, n=6, *extra):
    ft, pre = checkpoints
    return ["sample", "--finetuned", str(ft), "--pretrained", str(pre), "--num-samples", str(n), "--out", str(out),
            "--steps", "3", "--batch-size", "4", "--device", "cpu", "--w", "1.5", *extra]


def read_all(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("shard_*/*.png"))])


def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_resumes(checkpoints, tmp_path, monkeypatch, capsys):
    assert main(sample_cmd(checkpoints, tmp_path / "clean")) == 0
    written = {"n": 0}
    original = writer_module._write_file

    def filling_disk(path, data):
        written["n"] += 1
        if written["n"] == 5:  # the fifth image: half of it fits, then the disk is full
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data)

    monkeypatch.setattr(writer_module, "_write_file", filling_disk)
    assert main(sample_cmd(checkpoints, tmp_path / "full")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"dogbench sample: error: cannot write samples to {tmp_path / 'full'} (the disk is full)")
    assert "rerun the same command" in err
    assert not list((tmp_path / "full").rglob("*.tmp"))
    assert len(list((tmp_path / "full").rglob("*.png"))) == 4
    monkeypatch.setattr(writer_module, "_write_file", original)
    assert main(sample_cmd(checkpoints, tmp_path / "full")) == 0
    np.testing.assert_array_equal(read_all(tmp_path / "full"), read_all(tmp_path / "clean"))
    assert check_sample_set(tmp_path / "full").ok


def test_a_killed_writers_temporary_file_is_removed_at_the_next_start(tmp_path):
    folder = SampleFolder(tmp_path / "s", 2, {"a": 1}).open()
    (folder.root / "shard_000").mkdir()
    dead = folder.root / "shard_000" / f".000000.png.{writer_module.HOST}.999999999.tmp"
    elsewhere = folder.root / "shard_000" / ".000001.png.otherhost.12.tmp"  # another machine's: left alone
    dead.write_bytes(b"half")
    elsewhere.write_bytes(b"half")
    SampleFolder(tmp_path / "s", 2, {"a": 1}).open()
    assert not dead.exists() and elsewhere.exists()


def test_sample_classes_labels_and_defaults_from_the_checkpoint(checkpoints, tmp_path):
    assert main(sample_cmd(checkpoints, tmp_path / "some", 8, "--classes", "2,0")) == 0
    manifest = json.loads((tmp_path / "some" / MANIFEST).read_text())
    assert manifest["config"]["classes"] == [0, 2]
    assert manifest["config"]["clip_denoised"] is True  # a pixel-space checkpoint: x0 clipped by default
    labels = SampleFolder(tmp_path / "some", 8, manifest["config"]).labels()
    assert set(labels.tolist()) == {0, 2} and labels.tolist() == labels_among(0, range(8), (0, 2)).tolist()
    # among all classes, labels_among is the sampler's own draw: --classes 0,1,2 makes the same images
    assert labels_among(5, range(20), range(3)).tolist() == sample_inputs(5, range(20), 3, (1,), 1)[0].tolist()
    assert main(sample_cmd(checkpoints, tmp_path / "all", 8)) == 0
    assert main(sample_cmd(checkpoints, tmp_path / "listed", 8, "--classes", "0,1,2")) == 0
    np.testing.assert_array_equal(read_all(tmp_path / "all"), read_all(tmp_path / "listed"))
    full = json.loads((tmp_path / "all" / MANIFEST).read_text())["config"]
    assert "classes" not in full and full["clip_denoised"] is True
    assert main(sample_cmd(checkpoints, tmp_path / "noclip", 2, "--no-clip-denoised")) == 0
    assert json.loads((tmp_path / "noclip" / MANIFEST).read_text())["config"]["clip_denoised"] is False


@pytest.fixture
def process_state(monkeypatch):
    """--no-progress quiets third-party output for the rest of the process: give it back after the test."""
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_HUB_VERBOSITY", "DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY",
                 "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_latent_checkpoints_do_not_clip_by_default(tiny_vae_dir, tmp_path, process_state, capfd):
    torch.manual_seed(0)
    latent = DiT(**tiny_dit_config(in_channels=4, input_size=4))
    export_checkpoint(latent, tmp_path / "latent.pt", autoencoder=str(tiny_vae_dir))
    assert main(["sample", "--finetuned", str(tmp_path / "latent.pt"), "--method", "none", "--num-samples", "2",
                 "--steps", "2", "--out", str(tmp_path / "s"), "--device", "cpu", "--no-progress"]) == 0
    config = json.loads((tmp_path / "s" / MANIFEST).read_text())["config"]
    assert config["clip_denoised"] is False and config["autoencoder"] == str(tiny_vae_dir)
    assert read_all(tmp_path / "s").shape == (2, 8, 8, 3)  # the VAE's 2x upsampling of 4x4 latents
    assert "accelerate" not in capfd.readouterr().err  # diffusers' loading notice, silenced by --no-progress
