"""One interface for every feature network, one preprocessing path, and streaming feature extraction.

A ``FeatureNetwork`` bundles what a reported number depends on: the network (``module``), how a PIL image becomes its
input (``preprocess``), and a protocol record (name, feature dim, weights sha256, resize, normalisation). Generated
samples and reference images go through the same ``preprocess``, so the two feature sets are comparable.

Resize protocol (the public DoG reproduction: dgm-eval with ``--clean_resize``): PIL RGB, then each channel is resized
separately as a float32 image with PIL bicubic straight to the network's square input size (no crop, no uint8
rounding between the resize and the network), clipped to [0, 255] and scaled to [0, 1]. Network-specific
normalisation happens after that.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm.auto import tqdm

from benchmark.devices import default_device, tf32
from benchmark.errors import UserError
from benchmark.io import cached_file_sha256
from benchmark.metrics.statistics import FeatureStatistics

CLEAN_RESIZE = "PIL bicubic, float32 per channel, straight to {size}x{size}, no crop, clip [0,255]"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clean_resize(image: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) float32 in [0, 1]: PIL bicubic per channel in float mode, as dgm-eval's ``pil_resize``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c]), mode="F").resize((size, size), Image.BICUBIC))
                for c in range(3)]
    x = np.stack(channels, axis=0).clip(0.0, 255.0) / 255.0
    return torch.from_numpy(x.astype(np.float32))


class ResizePreprocess:
    """PIL image -> clean resize to ``size`` -> ``(x - mean) / std`` per channel (x in [0, 1])."""

    def __init__(self, size: int, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)):
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return (clean_resize(image, self.size) - self.mean) / self.std

    def describe(self) -> dict[str, Any]:
        return {"resize": CLEAN_RESIZE.format(size=self.size), "input_size": self.size,
                "normalize_mean": [round(float(v), 6) for v in self.mean.flatten()],
                "normalize_std": [round(float(v), 6) for v in self.std.flatten()]}


@dataclass
class FeatureNetwork:
    """A feature extractor for Frechet distances / PRDC.

    ``module`` maps a preprocessed batch (B, 3, H, W) to features (B, dim); ``preprocess`` maps one PIL image to one
    (3, H, W) tensor. ``weights_sha256`` identifies the weights (it keys the reference-statistics cache)."""

    name: str
    dim: int
    module: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    weights_sha256: str
    weights_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> "FeatureNetwork":
        self.module.to(device)
        return self

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.module(batch.float())
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise RuntimeError(f"feature network {self.name} returned shape {tuple(out.shape)}, expected (B, {self.dim})")
        return out.float()

    def protocol(self) -> dict[str, Any]:
        describe = getattr(self.preprocess, "describe", None)
        return {"network": self.name, "feature_dim": self.dim, "weights_file": self.weights_file,
                "weights_sha256": self.weights_sha256, "precision": "fp32, TF32 off",
                **(describe() if describe else {}), **self.extra}


# ---- image sources ---------------------------------------------------------------------------------------------


def png_files(directory) -> list[Path]:
    """All ``*.png`` under ``directory`` (recursively), in a stable sorted order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"samples directory {directory} does not exist: pass --samples DIR holding the generated *.png")
    files = sorted(directory.rglob("*.png"))
    if not files:
        raise UserError(f"no *.png under {directory}: pass --samples DIR holding the generated images")
    return files


class ImageSource(torch.utils.data.Dataset):
    """Uniform read access to images: a directory of PNGs, a uint8 (N, H, W, 3) array, a list of PIL images, or a
    dataset whose items are ``(PIL image, label)`` (the data contract) or PIL images. ``indices`` selects a subset."""

    def __init__(self, images, indices: Sequence[int] | None = None):
        if isinstance(images, (str, os.PathLike)):
            images = png_files(images)
        self.images = images
        self.indices = None if indices is None else list(indices)

    def __len__(self):
        return len(self.images) if self.indices is None else len(self.indices)

    def name(self, i) -> str:
        """A stable name of item ``i``: its file name (with its folder) for files, else its position."""
        item = self.images[i if self.indices is None else self.indices[i]]
        if isinstance(item, (str, os.PathLike)):
            return f"{Path(item).parent.name}/{Path(item).name}"
        return f"#{i if self.indices is None else self.indices[i]}"

    def __getitem__(self, i) -> Image.Image:
        item = self.images[i if self.indices is None else self.indices[i]]
        if isinstance(item, tuple):  # (image, label) from an ImageDataset
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            with Image.open(item) as f:
                return f.convert("RGB")
        if isinstance(item, np.ndarray):
            return Image.fromarray(item).convert("RGB")
        return item.convert("RGB")


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, source: ImageSource, preprocess):
        self.source, self.preprocess = source, preprocess

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return self.preprocess(self.source[i])


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def feature_statistics(network: FeatureNetwork, images, batch_size: int = 50, device=None,
                       num_workers: int | None = None, progress: bool = True, desc: str | None = None,
                       keep_features: bool = True) -> dict:
    """Gaussian statistics (and, with ``keep_features``, the (N, dim) float32 features in image order) of every
    image, streamed batch by batch through a ``FeatureStatistics`` metric. Under an initialised process group each
    rank extracts the images ``i % world == rank`` and the metric combines the ranks: every rank gets the
    statistics of the whole set. Returns {"n", "mu", "sigma"[, "features"]}."""
    source = images if isinstance(images, ImageSource) else ImageSource(images)
    device = torch.device(device) if device else torch.device(default_device())
    if num_workers is None:
        # PIL decoding and float bicubic resizing are CPU work; on a GPU run they are the bottleneck.
        num_workers = 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    rank, world = _rank_world()
    mine = list(range(rank, len(source), world))
    loader = torch.utils.data.DataLoader(_Preprocessed(source, network.preprocess), batch_size=batch_size,
                                         sampler=mine, num_workers=num_workers, pin_memory=device.type == "cuda")
    network.module.eval()
    network.to(device)
    # the sums live on the CPU in float64: exact accumulation, and gloo can reduce them
    stats = FeatureStatistics(network.dim, keep_features=keep_features)
    done = 0
    with tf32(False):  # true fp32 on every GPU (see the module docstring of benchmark.devices)
        for batch in tqdm(loader, desc=desc or f"{network.name} features", unit="batch", disable=not progress,
                          leave=False):
            feats = network.forward(batch.to(device, non_blocking=True)).cpu()
            stats.update(feats, torch.as_tensor(mine[done:done + len(feats)]))
            done += len(feats)
    return stats.compute()


def extract_features(network: FeatureNetwork, images, batch_size: int = 50, device=None, num_workers: int | None = None,
                     progress: bool = True, desc: str | None = None) -> np.ndarray:
    """Features (N, dim) float32 of every image, in order (images are never all held in memory)."""
    return feature_statistics(network, images, batch_size, device, num_workers, progress, desc)["features"]


# ---- weights identity --------------------------------------------------------------------------------------------


def weights_sha256(path) -> str:
    """sha256 of a weights file, hashed once a process (a 1.2 GB DINOv2 file)."""
    return cached_file_sha256(path)


def state_dict_sha256(module: nn.Module) -> str:
    """A weights hash for networks that come from no file (tests, custom modules): sha256 over the tensors."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()
