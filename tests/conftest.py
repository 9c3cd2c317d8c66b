import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmark.models import DiT, export_checkpoint
from postgres_server import missing_postgres, throwaway_postgres

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
SHARED_DATA = Path(os.environ.get("DOGBENCH_DATA", SHARED / "data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def run_if(*, gpu: bool = False, shared_data: str | None = None, fixtures: bool = False, postgres: bool = False):
    """The one skip helper: a test that needs a CUDA device, a file or folder of ../shared/data (relative path),
    ../shared/fixtures, or a PostgreSQL server to start (the ``postgres_url`` fixture) is skipped with the reason
    when it is missing."""
    reasons = []
    if gpu and not torch.cuda.is_available():
        reasons.append("needs a CUDA device")
    if shared_data and not (SHARED_DATA / shared_data).exists():
        reasons.append(f"needs ../shared/data/{shared_data}")
    if fixtures and not FIXTURES.is_dir():
        reasons.append("needs ../shared/fixtures")
    if postgres and missing_postgres():
        reasons.append(missing_postgres())
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "runs")


def pytest_collection_modifyitems(config, items):
    gpu = run_if(gpu=True)
    for item in items:
        if "gpu" in item.keywords:  # every test marked gpu goes through the one helper
            item.add_marker(gpu)


def tiny_dit_config(**kw):
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0,
               class_dropout_prob=0.1, num_classes=5, learn_sigma=True)
    cfg.update(kw)
    return cfg


def flip_weight_bytes(src, dst, tensor: str, count: int = 4096, mask=0xFF) -> None:
    """Copy checkpoint ``src`` to ``dst`` with ``count`` bytes in the middle of weight ``tensor``'s data XORed with
    ``mask`` (0xFF: bit-inverted, which keeps float32 weights finite and far off their scale; an array of bytes: a
    per-byte pattern): the disk or copy corruption the source probe and the checkpoint hashes are measured on."""
    from benchmark.models.checkpoint import extract_state_dict, read_checkpoint

    raw = bytearray(Path(src).read_bytes())
    data = extract_state_dict(read_checkpoint(src))[tensor].contiguous().numpy().tobytes()
    at = raw.find(data[:64])
    assert at >= 0 and raw.find(data[:64], at + 1) < 0, f"{tensor}'s bytes are not found once in {src}"
    count = min(count, len(data))
    start = at + (len(data) - count) // 2
    block = np.frombuffer(bytes(raw[start:start + count]), np.uint8) ^ np.asarray(mask, np.uint8)
    raw[start:start + count] = block.tobytes()
    Path(dst).write_bytes(bytes(raw))


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server with an empty database (tests/postgres_server.py): its URL
    postgresql://dogbench@127.0.0.1:PORT/sweeps. Use with run_if(postgres=True)."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def tiny_dit():
    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())
    # adaLN-Zero makes a fresh DiT output zeros; randomise everything so tests see a real function
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(autouse=True)
def results_outside_the_checkout(tmp_path_factory, monkeypatch):
    """A command run without --results-root writes to ./results: never the checkout's during tests."""
    monkeypatch.setenv("DOGBENCH_RESULTS", str(tmp_path_factory.mktemp("default-results")))


@pytest.fixture(autouse=True)
def fresh_feature_networks():
    """Tests replace loaders and weights under the same paths; a network kept from another test would hide that."""
    from benchmark.metrics import evaluate
    evaluate._NETWORKS.clear()
    yield
    evaluate._NETWORKS.clear()


@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine: a second thread only adds synchronisation waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A tiny random diffusers AutoencoderKL (2x downsampling, 4 latent channels) saved as a local folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=16)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


@pytest.fixture
def tiny_experiment(tmp_path, monkeypatch):
    """A whole experiment in seconds: a tiny random source DiT, 3 classes x 5 real 32x32 Caltech-101 images in a
    class-folder dataset, fd_effnet, w in {1, 2}. Returns (YAML path, results root)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    data = np.load(SHARED_DATA / "caltech101" / "caltech101_32.npz")
    target = tmp_path / "target"
    for k, cls in enumerate([0, 1, 2]):  # 3 real classes, 5 images each
        idx = np.flatnonzero(data["labels"] == cls)[:5]
        (target / f"class{k}").mkdir(parents=True)
        for i in idx:
            Image.fromarray(data["images"][i]).save(target / f"class{k}" / f"{i}.png")
    torch.manual_seed(0)
    source = DiT(**tiny_dit_config())
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.1)
    export_checkpoint(source, tmp_path / "source.pt", autoencoder="identity")
    config = {
        "name": "tiny", "datasets": ["folder"], "data_root": str(target),
        "source": {"checkpoint": str(tmp_path / "source.pt"), "model": tiny_dit_config(), "num_classes": 5, "image_size": 8,
                   "sanity_check": False},  # random weights: the source probe would refuse them
        "autoencoder": "identity",
        "finetune": {"steps": 3, "global_batch_size": 4, "ema_decay": 0.9, "precision": "fp32",
                     "checkpoint_every": 2, "num_workers": 0},
        "methods": ["none", "cfg", "dog"], "w_grid": [1.0, 2.0],
        "sampling": {"num_samples": 6, "steps": 3, "batch_size": 4, "guided_channels": None, "clip_denoised": True},
        "evaluation": {"metrics": ["fd_effnet"], "ref_split": "all", "batch_size": 8, "select_by": "fd_effnet"},
        "tracking": {"wandb": {"enabled": True, "mode": "offline"}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tmp_path / "results"
