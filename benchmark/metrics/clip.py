"""CLIP ViT-L/14 at 336 px image embeddings for CMMD (Jayasumana et al. 2024): the weights the paper uses,
``openai/clip-vit-large-patch14-336`` from the Hugging Face hub, through ``transformers`` (an optional dependency:
``pip install -e '.[cmmd]'``; it comes with peft too).

Where the weights come from, first match wins (nothing is downloaded):
  1. ``weights`` (--clip-weights / weights.clip): a folder holding config.json and the weights
     (model.safetensors, pytorch_model.bin, or a sharded model.safetensors.index.json), as ``save_pretrained`` or
     ``hf download openai/clip-vit-large-patch14-336`` writes it;
  2. the Hugging Face cache ($HF_HUB_CACHE, by default ~/.cache/huggingface/hub): the snapshot of that repository.
Either a full CLIPModel checkpoint (the release: text and vision towers) or a vision-only one; the vision tower and
its projection are loaded with strict=True (every key present, no shape mismatch) and checked for NaN/inf. A weights
file from the cache is checked against the sha256 its blob is named by.

The embedding, as the paper's code computes it: ``CLIPVisionModelWithProjection(...).image_embeds`` (the projected
pooled CLS token, 768-d), L2-normalised, in fp32. Input: the benchmark's clean resize (PIL float bicubic straight to
336 x 336, no crop; the paper's code resizes with torch bicubic, also without a crop), then CLIP's mean/std.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from benchmark.errors import UserError
from benchmark.io import cached_file_sha256, check_finite, check_sha256
from benchmark.metrics.features import FeatureNetwork, ResizePreprocess, weights_sha256

CLIP_REPO = "openai/clip-vit-large-patch14-336"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
VISION_KEYS = ("vision_model.", "visual_projection.")
DOWNLOAD = f"`hf download {CLIP_REPO} config.json pytorch_model.bin` (the huggingface_hub CLI)"


def hub_cache_snapshot() -> Path | None:
    """The cached snapshot folder of CLIP_REPO, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(CLIP_REPO, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _weights_in(folder: Path) -> Path | None:
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def find_clip_weights(weights=None) -> Path:
    """The folder to load CLIP from (see the module docstring), or a one-line UserError naming where to put it."""
    if weights:
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file() or _weights_in(folder) is None:
            problem = "does not exist" if not folder.exists() else "lacks config.json or the weights"
            raise UserError(f"--clip-weights {folder} {problem}: pass a folder holding the config.json and "
                            f"model.safetensors (or pytorch_model.bin) of {CLIP_REPO} (download: {DOWNLOAD})")
        return folder
    folder = hub_cache_snapshot()
    if folder is None or _weights_in(folder) is None:
        from huggingface_hub import constants  # comes with transformers and diffusers
        raise UserError(f"CMMD needs the CLIP weights {CLIP_REPO}: download them once into the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}) with {DOWNLOAD}, or pass --clip-weights DIR (a folder holding "
                        f"config.json and the weights)")
    return folder


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in _read_state(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def vision_config(config: dict):
    """A CLIPVisionConfig from a config.json: a CLIPModel's vision_config (its top-level projection_dim applies)
    or a vision model's own."""
    from transformers import CLIPVisionConfig
    if config.get("model_type") == "clip":
        vision = dict(config.get("vision_config") or {})
        vision.setdefault("projection_dim", config.get("projection_dim", 512))
        if "projection_dim" in config:
            vision["projection_dim"] = config["projection_dim"]
        return CLIPVisionConfig(**{k: v for k, v in vision.items() if k not in ("model_type", "transformers_version")})
    return CLIPVisionConfig(**{k: v for k, v in config.items() if k not in ("model_type", "transformers_version",
                                                                            "architectures")})


def load_clip_vision(folder) -> tuple[nn.Module, Path]:
    """(CLIPVisionModelWithProjection in eval mode, the weights file), strict."""
    try:
        from transformers import CLIPVisionModelWithProjection
    except ImportError:
        raise UserError("CMMD needs the transformers package: pip install -e '.[cmmd]'") from None
    folder = Path(folder)
    path = _weights_in(folder)
    fix = f"delete {folder} and download it again ({DOWNLOAD})"
    try:
        config = vision_config(json.loads((folder / "config.json").read_text()))
        state = _read_state(path)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable CLIP checkpoint ({type(e).__name__}); {fix}") from None
    verify_cached_blob(path, fix)
    # the text tower goes; position_ids is a buffer older transformers saved and newer ones rebuild
    state = {k: v for k, v in state.items() if k.startswith(VISION_KEYS) and not k.endswith(".position_ids")}
    check_finite(state, path, fix)
    model = CLIPVisionModelWithProjection(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing, unexpected = sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict()))
        detail = f"{len(missing)} vision keys missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. " \
                 f"{unexpected[:1]})" if missing or unexpected else str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{path} is not a {CLIP_REPO}-style CLIP checkpoint: {detail}; {fix}") from None
    return model.eval(), path


def verify_cached_blob(path: Path, fix: str) -> None:
    """A weights file in the Hugging Face cache is a link to ``blobs/<sha256>``: check the bytes against that name."""
    blob = Path(os.path.realpath(path))
    if len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name):
        check_sha256(path, cached_file_sha256(blob), blob.name, fix)


class ClipEmbeddings(nn.Module):
    """Preprocessed pixels -> L2-normalised projected CLIP image embeddings (fp32)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.model(pixel_values=x.float()).image_embeds.float()
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def clip_network(weights=None) -> FeatureNetwork:
    """The CMMD ``FeatureNetwork``."""
    model, path = load_clip_vision(find_clip_weights(weights))
    size = int(model.config.image_size)
    return FeatureNetwork(
        name="clip_vit_l14_336", dim=int(model.config.projection_dim), module=ClipEmbeddings(model),
        preprocess=ResizePreprocess(size, CLIP_MEAN, CLIP_STD), weights_sha256=weights_sha256(path),
        weights_file=f"{path.parent.name}/{path.name}",
        extra={"features": "image_embeds (projected CLS), L2-normalised", "repository": CLIP_REPO})
