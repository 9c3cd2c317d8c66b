"""DINOv2 ViT-L/14 through torch.hub, for FD_DINOv2 and PRDC (Stein et al. 2023; the metric space of dgm-eval).

Where the code and weights come from, first match wins:
  1. ``hub_dir`` (--dinov2-hub-dir): a local clone of github.com/facebookresearch/dinov2, loaded with
     ``torch.hub.load(dir, 'dinov2_vitl14', source='local', pretrained=False)``, then the weights file
     (``weights`` / --dinov2-weights, else the hub checkpoints cache) loaded with strict=True;
  2. the torch hub cache: ``<hub>/facebookresearch_dinov2_main`` + ``<hub>/checkpoints/dinov2_vitl14_pretrain.pth``,
     loaded the same way (no network access at all, unlike ``torch.hub.load('facebookresearch/dinov2', ...)``,
     which asks GitHub for the default branch first);
  3. online: ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')``, which fills that cache.
The feature is the model's default output: the final-norm CLS token (1024-d), computed in fp32. Input: clean resize
to 224x224, then ImageNet mean/std normalisation.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from benchmark.errors import UserError
from benchmark.io import check_finite
from benchmark.metrics.features import IMAGENET_MEAN, IMAGENET_STD, FeatureNetwork, ResizePreprocess, weights_sha256

HUB_REPO = "facebookresearch/dinov2"
ENTRY_POINT = "dinov2_vitl14"
FEATURE_DIM = 1024
INPUT_SIZE = 224
WEIGHTS_FILENAME = "dinov2_vitl14_pretrain.pth"
WEIGHTS_URL = f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/{WEIGHTS_FILENAME}"


def hub_cache_repo() -> Path:
    return Path(torch.hub.get_dir()) / "facebookresearch_dinov2_main"


def hub_cache_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def load_dinov2(hub_dir=None, weights=None) -> tuple[nn.Module, Path]:
    """(model in eval mode, path of the weights it holds)."""
    repo = Path(hub_dir).expanduser() if hub_dir else (hub_cache_repo() if hub_cache_repo().is_dir() else None)
    if repo is not None:
        if not (repo / "hubconf.py").is_file():
            raise UserError(f"{repo} has no hubconf.py: pass --dinov2-hub-dir a clone of github.com/{HUB_REPO}")
        path = Path(weights).expanduser() if weights else hub_cache_weights()
        if not path.is_file():
            raise UserError(f"FD_DINOv2/PRDC need {WEIGHTS_FILENAME}: put it in {hub_cache_weights().parent}/ "
                            f"or pass --dinov2-weights PATH (download: {WEIGHTS_URL})")
        model = torch.hub.load(str(repo), ENTRY_POINT, source="local", pretrained=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_finite(state, path, f"delete it and download it again ({WEIGHTS_URL}); no hash is published for it")
        model.load_state_dict(state, strict=True)
        return model.eval(), path
    if weights:
        raise UserError(f"--dinov2-weights needs the model code too: pass --dinov2-hub-dir DIR (a clone of github.com/{HUB_REPO})")
    try:
        model = torch.hub.load(HUB_REPO, ENTRY_POINT, trust_repo=True)
    except Exception as e:  # offline, proxy, rate limit: say what to put where
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"FD_DINOv2/PRDC need DINOv2 offline: clone github.com/{HUB_REPO} to {hub_cache_repo()} and put "
                        f"{WEIGHTS_FILENAME} in {hub_cache_weights().parent}/ (or pass --dinov2-hub-dir/--dinov2-weights); "
                        f"online load failed: {reason}") from None
    check_finite(model.state_dict(), hub_cache_weights(), f"delete it and load again ({WEIGHTS_URL})")
    return model.eval(), hub_cache_weights()


class CLSFeatures(nn.Module):
    """Calls the hub model and insists on an fp32 (B, D) output: DINOv2's ``forward`` is the normed CLS token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.model(x.float())
        if isinstance(out, dict):  # forward_features-style output
            out = out["x_norm_clstoken"]
        return out.float()


def dinov2_network(hub_dir=None, weights=None):
    model, path = load_dinov2(hub_dir, weights)
    module = CLSFeatures(model)
    dim = getattr(model, "embed_dim", None)
    if dim is None:
        with torch.no_grad():
            dim = module(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)).shape[1]
    return FeatureNetwork(
        name=ENTRY_POINT, dim=int(dim), module=module,
        preprocess=ResizePreprocess(INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD),
        weights_sha256=weights_sha256(path), weights_file=path.name,
        extra={"features": "final-norm CLS token"})
