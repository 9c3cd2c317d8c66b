"""CMMD's CLIP (openai/clip-vit-large-patch14-336 through transformers): a random-weight stand-in of the same
architecture written like the release (a full CLIPModel folder), found as a given folder or in the Hugging Face
cache, loaded strictly, its blob hash checked; the embedding equals transformers' own get_image_features, normalised."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from benchmark import standins
from benchmark.errors import UserError
from benchmark.io import IntegrityError

transformers = pytest.importorskip("transformers")
from benchmark.metrics import clip  # noqa: E402

SMALL = dict(vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                                patch_size=14, image_size=28, hidden_act="quick_gelu", projection_dim=8),
             text_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                              max_position_embeddings=8, vocab_size=64, projection_dim=8),
             projection_dim=8)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    return standins.write_clip(tmp_path_factory.mktemp("clip") / "clip-small", SMALL)


def test_the_embedding_is_transformers_image_features_normalised(small_clip):
    net = clip.clip_network(small_clip)
    assert net.dim == 8 and net.protocol()["input_size"] == 28 and net.protocol()["repository"] == clip.CLIP_REPO
    reference = transformers.CLIPModel.from_pretrained(small_clip).eval()  # the independent path: the whole model
    x = torch.rand(3, 3, 28, 28)
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=x)
        expected = expected if torch.is_tensor(expected) else expected.pooler_output
        got = net.forward(x)
    assert torch.allclose(got, expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(3))


def hub_cache(tmp_path, folder, monkeypatch):
    """``folder`` laid out as the Hugging Face cache stores a download: blobs named by their sha256, a snapshot of
    links, refs/main."""
    from huggingface_hub import constants
    repo = tmp_path / "hub" / f"models--{clip.CLIP_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / sha)
        (snapshot / file.name).symlink_to(repo / "blobs" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return snapshot


def test_found_in_the_hugging_face_cache_and_its_blob_checked(small_clip, tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(UserError) as e:
        clip.find_clip_weights()
    message = str(e.value)
    assert "\n" not in message and "hf download openai/clip-vit-large-patch14-336" in message
    assert str(tmp_path / "empty-hub") in message and "--clip-weights" in message
    snapshot = hub_cache(tmp_path, small_clip, monkeypatch)
    assert clip.find_clip_weights() == snapshot
    assert clip.clip_network().dim == 8
    blob = (snapshot / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0x01  # one flipped bit in the weights
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="is corrupted"):
        clip.clip_network()


def test_a_wrong_folder_or_checkpoint_is_one_line(small_clip, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        clip.find_clip_weights(tmp_path / "nope")
    other = dict(SMALL, vision_config=dict(SMALL["vision_config"], hidden_size=24))
    mixed = tmp_path / "mixed"
    shutil.copytree(small_clip, mixed)
    (mixed / "config.json").write_text(json.dumps({**json.loads((mixed / "config.json").read_text()),
                                                   "vision_config": other["vision_config"]}))
    with pytest.raises(UserError, match="not a openai/clip-vit-large-patch14-336-style CLIP checkpoint"):
        clip.clip_network(mixed)


def test_the_release_architecture_from_its_config():
    config = clip.vision_config({"model_type": "clip", **standins.CLIP_L14_336})
    with torch.device("meta"):
        model = transformers.CLIPVisionModelWithProjection(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (577, 1024)  # (336 / 14)^2 + 1 tokens
    assert shapes["vision_model.embeddings.patch_embedding.weight"] == (1024, 3, 14, 14)
    assert shapes["visual_projection.weight"] == (768, 1024)
    assert sum(k.endswith("self_attn.q_proj.weight") for k in shapes) == 24


def test_cmmd_through_evaluate_samples(small_clip, tmp_path):
    from benchmark.metrics import evaluate_samples
    from benchmark.metrics.kernels import CMMDResampler
    from test_metrics_evaluate import FakeDataset, make_images
    net = clip.clip_network(small_clip)
    ref = FakeDataset(make_images(20, 0))
    samples = make_images(10, 1, bright=60)
    result = evaluate_samples(samples, ref, ["cmmd"], networks={"clip": net}, cache_dir=tmp_path, device="cpu",
                              progress=False, card=True)
    features = result["card"].features["clip"]
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    real = result["card"].inputs["clip"].reference.prdc_features
    assert result["metrics"]["cmmd"] == pytest.approx(CMMDResampler(features, real)())
    assert result["protocol"]["cmmd"]["network"] == "clip_vit_l14_336"


@pytest.mark.slow  # writes and loads the full-size stand-in (1.7 GB: both towers, as the release holds them)
def test_full_size_standin_loads_as_the_release_would(tmp_path):
    folder = standins.write_clip(tmp_path / "clip-vit-large-patch14-336")
    net = clip.clip_network(folder)
    assert net.dim == 768 and net.protocol()["input_size"] == 336
    with torch.no_grad():
        assert net.forward(torch.rand(1, 3, 336, 336)).shape == (1, 768)


def test_an_older_pytorch_model_bin_with_position_ids_loads(small_clip, tmp_path):
    """The release's original pytorch_model.bin was saved by a transformers that stored position_ids buffers."""
    from safetensors.torch import load_file
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copyfile(small_clip / "config.json", folder / "config.json")
    state = load_file(str(small_clip / "model.safetensors"))
    state["vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    torch.save(state, folder / "pytorch_model.bin")
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clip.clip_network(folder).forward(x), clip.clip_network(small_clip).forward(x))
