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
