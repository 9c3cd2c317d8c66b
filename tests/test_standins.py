"""The stand-in writer (benchmark.standins): every file it writes is accepted by the loader the protocol uses, with
strict loading, found where the lookups look. Small architectures here; the full-size set is the slow test."""
import json

import pytest
import torch

from benchmark.data import get_dataset
from benchmark.harness.loading import load_experiment
from benchmark.metrics.dinov2 import dinov2_network
from benchmark.metrics.inception import fid_inception_network
from benchmark.models import KLAutoencoder, load_autoencoder, load_dit, resolve_checkpoint
from benchmark.models.checkpoint import CHECKPOINT_DIR_ENV
from benchmark import standins
from conftest import FIXTURES, SHARED_DATA, run_if

SMALL_VIT = dict(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def test_dit_standin_is_found_by_name_and_loads_strictly(tmp_path, monkeypatch):
    path = standins.write_dit(tmp_path / "ckpts" / standins.dit_file_name("DiT-N/2", 32), "DiT-N/2", 32)
    assert path.name == "DiT-N-2-32x32.pt" and standins.dit_file_name("DiT-XL/2", 256) == "DiT-XL-2-256x256.pt"
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "ckpts"))
    assert resolve_checkpoint(path.name, download=False) == path
    net = load_dit(path.name, model="DiT-N/2", num_classes=1000, input_size=4)
    assert net.config["in_channels"] == 4 and net.num_classes == 1000
    # not the zero function that DiT's adaLN-Zero initialisation is
    assert net.final_layer.linear.weight.abs().sum() > 0 and net.blocks[0].adaLN_modulation[-1].weight.abs().sum() > 0
    with torch.no_grad():
        out = net(torch.randn(2, 4, 4, 4), torch.tensor([10, 500]), torch.tensor([1, 1000]))
    assert out.shape == (2, 8, 4, 4) and out.abs().mean() > 0


def test_dinov2_standin_loads_through_the_hub_strictly(tmp_path):
    hub, weights = standins.write_dinov2(tmp_path / "hub", tmp_path / "dinov2_vitl14_pretrain.pth", SMALL_VIT)
    net = dinov2_network(hub_dir=hub, weights=weights)  # torch.hub.load(source="local") + load_state_dict(strict)
    assert net.dim == 32 and net.weights_file == "dinov2_vitl14_pretrain.pth"
    images = torch.rand(3, 3, 224, 224)  # a 16x16 patch grid against the table's 4x4: the bicubic resize
    with torch.no_grad():
        feats = net.forward(images)
    assert feats.shape == (3, 32) and torch.isfinite(feats).all() and feats.std(0).mean() > 0


def test_dinov2_standin_has_the_release_layout():
    with torch.device("meta"):
        sd = standins.DinoViT(**standins.VITL14).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    top = {"cls_token": (1, 1, 1024), "pos_embed": (1, 1370, 1024), "mask_token": (1, 1024),
           "patch_embed.proj.weight": (1024, 3, 14, 14), "patch_embed.proj.bias": (1024,),
           "norm.weight": (1024,), "norm.bias": (1024,)}
    block = {"norm1.weight": (1024,), "norm1.bias": (1024,), "attn.qkv.weight": (3072, 1024), "attn.qkv.bias": (3072,),
             "attn.proj.weight": (1024, 1024), "attn.proj.bias": (1024,), "ls1.gamma": (1024,),
             "norm2.weight": (1024,), "norm2.bias": (1024,), "mlp.fc1.weight": (4096, 1024), "mlp.fc1.bias": (4096,),
             "mlp.fc2.weight": (1024, 4096), "mlp.fc2.bias": (1024,), "ls2.gamma": (1024,)}
    expected = {**top, **{f"blocks.{i}.{k}": v for i in range(24) for k, v in block.items()}}
    assert shapes == expected
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 304_368_640  # the published parameter count of dinov2_vitl14


@pytest.mark.slow  # two 299x299 images through Inception-V3 to set the BatchNorm statistics, then one more
def test_fid_inception_standin_loads_strictly_with_live_features(tmp_path):
    path = standins.write_fid_inception(tmp_path / "pt_inception-standin.pth")
    with pytest.warns(UserWarning, match="not the pytorch-fid FID weights"):  # honest about being a stand-in
        net = fid_inception_network(path)
    with torch.no_grad():
        feats = net.forward(torch.rand(2, 3, 299, 299))
    assert feats.shape == (2, 2048) and feats.mean() > 1e-3  # default BatchNorm statistics would give ~1e-8


def test_vae_standin_folder_loads(tmp_path, monkeypatch):
    small = dict(standins.SD_VAE_CONFIG, block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4)
    monkeypatch.setattr(standins, "SD_VAE_CONFIG", small)
    folder = standins.write_sd_vae(tmp_path / "sd-vae-ft-ema")
    ae = load_autoencoder(folder)
    assert isinstance(ae, KLAutoencoder) and ae.downsample == 2 and ae.latent_channels() == 4
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL" and config["block_out_channels"] == [8, 8]


@run_if(shared_data="caltech101/caltech101_32.npz")
def test_caltech101_standin_has_the_official_layout(tmp_path):
    root = standins.write_caltech101(tmp_path / "data", classes=3, per_class=6, shared=SHARED_DATA)
    train, every = get_dataset("caltech101", "train", root=root), get_dataset("caltech101", "all", root=root)
    assert train.num_classes == 3 and len(every) == 18 and len(train) == 12  # every third image is a test image
    image, label = every[0]
    assert image.size == (32, 32) and label == 0


def test_overrides_point_the_paper_experiment_at_the_standins(tmp_path):
    paths = standins.standin_paths(tmp_path, "DiT-XL/2", 256)
    for p in (paths["checkpoint"], paths["inception"], paths["dinov2_weights"]):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    paths["autoencoder"].mkdir()
    exp = load_experiment("paper", standins.experiment_overrides(paths))
    assert exp.source_checkpoint() == str(paths["checkpoint"]) and exp.datasets == ["caltech101"]
    assert exp.autoencoder_spec() == str(paths["autoencoder"]) and exp.data_dir() == paths["data_root"]
    assert exp.weight_paths() == {"inception_weights": str(paths["inception"]),
                                  "dinov2_hub_dir": str(paths["dinov2_hub_dir"]),
                                  "dinov2_weights": str(paths["dinov2_weights"])}
    assert standins.environment(paths)[CHECKPOINT_DIR_ENV] == str(paths["checkpoint"].parent)


@pytest.mark.slow
@run_if(fixtures=True, shared_data="caltech101/caltech101_32.npz")
def test_full_size_standins_load_into_the_paper_architectures(tmp_path, monkeypatch):
    """The set `make dry-run` uses on a GPU: DiT-XL/2 under the release name (2.7 GB), the SD-VAE, the FID
    Inception and DINOv2 ViT-L/14, each through the loader the protocol calls."""
    paths = standins.write_standins(tmp_path, "DiT-XL/2", 256, shared=SHARED_DATA, log=lambda _: None)
    layout = json.loads((FIXTURES / "dit_xl2_256_state_dict_layout.json").read_text())
    state = torch.load(paths["checkpoint"], map_location="cpu", weights_only=True, mmap=True)
    assert {k: list(v.shape) for k, v in state.items()} == layout["state_dict"]
    assert list(state) == list(layout["state_dict"])  # in the release's order too
    del state
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(paths["checkpoint"].parent))
    net = load_dit("DiT-XL-2-256x256.pt", model="DiT-XL/2", num_classes=1000)
    assert sum(p.numel() for p in net.parameters()) == 675_129_632
    del net
    assert load_autoencoder(paths["autoencoder"]).downsample == 8
    assert dinov2_network(paths["dinov2_hub_dir"], paths["dinov2_weights"]).dim == 1024
    with pytest.warns(UserWarning):
        assert fid_inception_network(paths["inception"]).dim == 2048
    again = []
    standins.write_standins(tmp_path, "DiT-XL/2", 256, shared=SHARED_DATA, log=again.append)
    assert again == []  # a rerun writes nothing
