"""Loading, validating and re-heading DiT checkpoints.

Accepted files: a raw state dict (the released ``DiT-XL-2-256x256.pt``), a dict with ``ema`` and/or ``model``
(the reference training script's checkpoints; EMA preferred), a Lightning checkpoint (``state_dict`` with
``ema.``/``model.`` prefixes) or this project's exported ``{"ema": ..., "config": ...}`` files. Every problem is one
line naming the first mismatching keys and the fix.

Integrity: ``export_checkpoint`` stores ``content_sha256`` (the weights and every other entry) in the file, and
``load_dit`` checks it, so a corrupted export is one line, never a silently wrong model. Every checkpoint the project
ships (``benchmark/assets/*.pt``) is such an export, so a damaged copy of it is refused wherever it is loaded from. Files without it (the DiT
release, which publishes no hash, older exports, other training scripts' files) are checked for NaN/inf weights and
for the architecture (``strict=True``); corrupted bytes that keep every value finite cannot be detected in them.
"""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from benchmark.io import NetworkError, atomic_torch_save, check_finite, check_sha256, content_sha256, probe
from benchmark.models.adapter import export_adapter, is_adapted, is_adapter_export, load_adapted
from benchmark.models.dit import DiT, dit_config

RELEASE_URL = "https://dl.fbaipublicfiles.com/DiT/models/{name}"
RELEASES = {  # release file -> (model name, input_size in latent pixels)
    "DiT-XL-2-256x256.pt": ("DiT-XL/2", 32),
    "DiT-XL-2-512x512.pt": ("DiT-XL/2", 64),
}
CHECKPOINT_DIR_ENV = "DOGBENCH_CHECKPOINTS"
CONTENT_HASH = "content_sha256"  # the key of an export's own hash
EXPORT_FILES = ("ema.pt", "last.ckpt")  # what a training folder holds, in the order a folder argument suggests them


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the requested architecture."""


def checkpoint_search_dirs() -> list[Path]:
    """Where a bare release name is looked for: $DOGBENCH_CHECKPOINTS, ./pretrained_models (the DiT repo's
    convention), and the torch hub checkpoint cache."""
    dirs = []
    if os.environ.get(CHECKPOINT_DIR_ENV):
        dirs.append(Path(os.environ[CHECKPOINT_DIR_ENV]).expanduser())
    dirs.append(Path("pretrained_models"))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def resolve_checkpoint(path_or_name: str | os.PathLike, download: bool = True) -> Path:
    """A local file, or a release name found in the search dirs, or downloaded into the torch hub cache."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        inside = [path / f for f in EXPORT_FILES if (path / f).is_file()] or sorted(path.glob("*.pt"))[:3]
        hint = f"pass {' or '.join(map(str, inside))}" if inside else "pass the .pt file"
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; {hint}")
    name = path.name
    for d in checkpoint_search_dirs():
        if (d / name).is_file():
            return d / name
    if name in RELEASES and download:
        target = Path(torch.hub.get_dir()) / "checkpoints" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            probe(RELEASE_URL.format(name=name), timeout=5)
            torch.hub.download_url_to_file(RELEASE_URL.format(name=name), str(target), progress=True)
            return target
        except (urllib.error.URLError, OSError, NetworkError) as e:
            where = ", ".join(str(d) for d in checkpoint_search_dirs())
            raise CheckpointError(f"checkpoint {name} not found locally and cannot be downloaded ({type(e).__name__}); "
                                  f"place it in one of: {where}, or pass its path") from None
    where = ", ".join(str(d) for d in checkpoint_search_dirs())
    raise CheckpointError(f"checkpoint {path_or_name} not found (looked in ./, {where}); pass the path of the .pt file")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw object saved in ``path`` (tensors on CPU)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects we refuse to unpickle
        detail = (str(e).splitlines() or [""])[0][:120]
        if "Weights only load failed" in detail:  # torch's advice about weights_only is not this user's fix
            detail = "not a torch file, or one holding Python objects besides tensors"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}"
                              f"{': ' + detail if detail else ''}); check the file or re-download it") from None


def checkpoint_metadata(path: str | os.PathLike) -> dict:
    """What a checkpoint file says besides its weights (an export's ``autoencoder``, ``dataset``, ``config``, ...),
    read without loading the weights where the format allows (mmap); ``{}`` for a raw state dict. An unreadable
    file is the one-line CheckpointError of ``read_checkpoint``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the legacy format cannot be mapped; anything unreadable gets read_checkpoint's line
        obj = read_checkpoint(path)
    if not isinstance(obj, dict):
        return {}
    return {k: v for k, v in obj.items() if k == "config" or not isinstance(v, (dict, torch.Tensor))}


def verify_export(obj: dict, path) -> None:
    """Check an export's ``content_sha256`` (when it has one) against its content as loaded."""
    if isinstance(obj, dict) and isinstance(obj.get(CONTENT_HASH), str):
        check_sha256(path, content_sha256({k: v for k, v in obj.items() if k != CONTENT_HASH}), obj[CONTENT_HASH],
                     "restore an intact copy (a checkpoint shipped in benchmark/assets: `git checkout -- "
                     "benchmark/assets`), or delete it and rerun the training that wrote it (a finished run "
                     "re-exports it from its last.ckpt)")


def extract_state_dict(obj: dict, prefer: str = "ema") -> dict[str, torch.Tensor]:
    """The model weights inside any of the accepted checkpoint formats (EMA weights preferred)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict; pass a DiT checkpoint")
    order = [prefer] + [k for k in ("ema", "model") if k != prefer]
    for key in order:
        if isinstance(obj.get(key), dict):
            return obj[key]
    if isinstance(obj.get("state_dict"), dict):  # Lightning: module attributes are prefixes
        sd = obj["state_dict"]
        for key in order:
            sub = {k[len(key) + 1:]: v for k, v in sd.items() if k.startswith(key + ".")}
            if sub:
                return {k.removeprefix("module."): v for k, v in sub.items()}
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise CheckpointError(f"no model weights found (keys: {', '.join(list(obj)[:6])}); expected a state dict or 'ema'/'model'")


def infer_dit_config(state_dict: dict[str, torch.Tensor], learn_sigma: Optional[bool] = None) -> dict:
    """Constructor arguments read off a DiT state dict's shapes (no names needed)."""
    try:
        proj = state_dict["x_embedder.proj.weight"]  # (D, C_in, p, p)
        table = state_dict["y_embedder.embedding_table.weight"]
        pos = state_dict["pos_embed"]
        final = state_dict["final_layer.linear.weight"]  # (p*p*C_out, D)
        fc1 = state_dict["blocks.0.mlp.fc1.weight"]
    except KeyError as e:
        raise CheckpointError(f"not a DiT checkpoint: key {e.args[0]!r} is missing; pass a DiT state dict") from None
    hidden, in_ch, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    out_ch = final.shape[0] // (patch * patch)
    grid = int(round(pos.shape[1] ** 0.5))
    heads = {1152: 16, 1024: 16, 768: 12, 384: 6, 192: 3, 128: 4}.get(hidden)
    return dict(
        input_size=grid * patch, patch_size=patch, in_channels=in_ch, hidden_size=hidden, depth=depth,
        num_heads=heads, mlp_ratio=fc1.shape[0] / hidden, class_dropout_prob=0.1,
        num_classes=table.shape[0] - 1, learn_sigma=out_ch == 2 * in_ch if learn_sigma is None else learn_sigma,
    )


def describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor], limit: int = 3) -> Optional[str]:
    """None when keys and shapes match exactly, else a short description of the first differences."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state_dict and state_dict[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:limit])}" + (f" (+{len(missing) - limit})" if len(missing) > limit else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:limit])}" + (f" (+{len(unexpected) - limit})" if len(unexpected) > limit else ""))
    if shapes:
        parts.append(f"shape of {'; '.join(shapes[:limit])}")
    return "; ".join(parts) or None


def load_dit(
    path_or_name: str | os.PathLike,
    model: Optional[str | dict] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    prefer: str = "ema",
    base: Optional[str | os.PathLike] = None,
    **overrides,
) -> DiT:
    """Build a DiT and load a checkpoint into it with ``strict=True``.

    The architecture comes from ``model`` (a name such as ``"DiT-XL/2"``, with ``num_classes``/``input_size``, or a
    dict of DiT constructor arguments),
    else from the checkpoint's saved ``config``, else from the state dict's shapes. A mismatch between the file and
    the requested architecture is a CheckpointError naming the first differing keys.

    A LoRA fine-tune's export is rebuilt from its base checkpoint (``base`` when given, e.g. the experiment's source,
    else the path it recorded; its sha256 must be the recorded one) plus the adapter: a
    ``benchmark.models.adapter.AdaptedDiT`` (``model`` and the overrides do not apply to it).
    """
    path = resolve_checkpoint(path_or_name)
    obj = read_checkpoint(path)
    verify_export(obj, path)
    if is_adapter_export(obj):
        return load_adapted(obj, path, base=base, num_classes=num_classes)
    state_dict = extract_state_dict(obj, prefer)
    check_finite(state_dict, path, "re-download it (release files) or restore an intact copy; a fine-tune that "
                                   "diverged to NaN needs a lower learning rate")
    if isinstance(model, dict):  # explicit constructor arguments (an experiment's source.model may be a dict)
        config = {**model, **overrides}
        config.update({k: v for k, v in (("num_classes", num_classes), ("input_size", input_size)) if v is not None})
    elif model is not None:
        release = RELEASES.get(path.name)
        config = dit_config(model, input_size=input_size or (release[1] if release else 32),
                            num_classes=num_classes if num_classes is not None else 1000, **overrides)
    elif isinstance(obj.get("config"), dict):
        config = {**obj["config"], **overrides}
    else:
        config = {**infer_dit_config(state_dict), **overrides}
        if config["num_heads"] is None:
            raise CheckpointError(f"{path}: cannot infer the head count of hidden size {config['hidden_size']}; pass --model "
                                  f"(source.model in an experiment)")
    if num_classes is not None and config.get("num_classes") != num_classes:
        raise CheckpointError(
            f"{path} has {config.get('num_classes')} classes but {num_classes} were requested; "
            f"re-head it for the target domain (dogbench finetune does) or pass the matching --num-classes "
            f"(source.num_classes in an experiment)")
    with torch.device("meta"):  # no memory and no random init for weights the file replaces (DiT-XL/2: 2.5 GiB)
        net = DiT(**config)
    problem = describe_mismatch(net, state_dict)
    if problem:
        hint = model if isinstance(model, str) else ("the given DiT arguments" if model else "the saved config")
        raise CheckpointError(f"{path} does not fit {hint} ({config['num_classes']} classes, input {config['input_size']}): "
                              f"{problem}; pass the matching --model/--num-classes (source.model/source.num_classes "
                              f"in an experiment) or the right file")
    # the file's tensors become the weights; in fp32, whatever precision they were saved in
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
                        strict=True, assign=True)
    # what else the file says (e.g. the autoencoder and dataset of our own exports), for the caller
    net.checkpoint_meta = {k: v for k, v in obj.items() if k not in ("ema", "model", "state_dict", "optimizer", CONTENT_HASH)
                           and not isinstance(v, torch.Tensor)} if "ema" in obj or "model" in obj else {}
    net.checkpoint_path = str(path)
    return net


def reheaded(model: DiT, num_classes: int, seed: Optional[int] = None) -> DiT:
    """A copy of ``model`` for a target domain with ``num_classes`` classes: every weight is kept except the label
    table, which is fresh (N(0, 0.02), as at initialisation) with num_classes + 1 rows (row K = null label)."""
    if num_classes < 1:
        raise ValueError(f"a target domain needs at least one class, got {num_classes}")
    config = {**model.config, "num_classes": num_classes}
    if config["class_dropout_prob"] <= 0:
        config["class_dropout_prob"] = 0.1  # the fine-tuned model needs a null row for CFG
    with torch.device("meta"):  # every weight is copied from model or drawn below: skip the random init
        new = DiT(**config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("y_embedder.")}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    table_shape = new.y_embedder.embedding_table.weight.shape
    state["y_embedder.embedding_table.weight"] = torch.randn(table_shape, generator=generator) * 0.02
    new.load_state_dict(state, strict=True, assign=True)
    return new


def export_checkpoint(model: DiT, path: str | os.PathLike, ema_state: Optional[dict] = None, **metadata) -> None:
    """Save an EMA-only sampling checkpoint: ``{"ema": weights, "config": constructor args, ...metadata,
    "content_sha256": hash of all of it}`` (checked by ``load_dit``). A LoRA fine-tune exports its adapter instead
    (``benchmark.models.adapter.export_adapter``: megabytes, not a second model)."""
    if is_adapted(model):
        return export_adapter(model, path, ema_state=ema_state, **metadata)
    state = ema_state if ema_state is not None else model.state_dict()
    obj = {"ema": {k: v.detach().cpu() for k, v in state.items()}, "config": dict(model.config), **metadata}
    obj[CONTENT_HASH] = content_sha256(obj)
    atomic_torch_save(obj, path)
