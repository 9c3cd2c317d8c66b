import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
SHARED_DATA = Path(os.environ.get("DOGBENCH_DATA", SHARED / "data"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_dit_config(**kw):
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0,
               class_dropout_prob=0.1, num_classes=5, learn_sigma=True)
    cfg.update(kw)
    return cfg


@pytest.fixture
def tiny_dit():
    from benchmark.models import DiT

    torch.manual_seed(0)
    model = DiT(**tiny_dit_config())
    # adaLN-Zero makes a fresh DiT output zeros; randomise everything so tests see a real function
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


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
