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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm.auto import tqdm

from benchmark.data.dataset import UNREADABLE_ERRORS
from benchmark.devices import default_device, tf32
from benchmark.errors import UserError, first_line
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NPZ_KEYS = ("arr_0", "images")  # the ADM evaluator's sample batches use arr_0


def image_files(directory, what: str = "--samples") -> list[Path]:
    """Every PNG, JPEG and WebP file under ``directory`` (recursively, hidden files skipped), in a stable sorted
    order. ``what`` names the flag in messages."""
    directory = Path(directory)
    if not directory.is_dir():
        problem = "is a file, not a folder or .npz" if directory.exists() else "does not exist"
        raise UserError(f"{what} {directory} {problem}: pass a folder of images (png, jpg, webp) or an .npz of uint8 "
                        f"(N, H, W, 3) images")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"no images (png, jpg, webp) under {directory}: pass {what} a folder that holds them")
    return files


def load_image_array(path, what: str = "--samples") -> np.ndarray:
    """The uint8 (N, H, W, 3) images of an .npz (key ``arr_0`` or ``images``), memory-mapped when stored
    uncompressed (np.savez), so a 50k-image reference batch is not read into memory at once."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {Path(n).stem: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}
            key = next((k for k in NPZ_KEYS if k in members), None)
            if key is None:
                raise UserError(f"{what} {path} holds {', '.join(members) or 'no arrays'}, not {' or '.join(NPZ_KEYS)}: "
                                f"save the images with np.savez(path, arr_0=images)")
            info = members[key]
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:
                f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
                name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
                f.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                offset = f.tell()
            images = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        else:
            with np.load(path, allow_pickle=False) as z:
                images = z[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{what} {path} is not a readable .npz ({first_line(e)}); pass an np.savez file of uint8 "
                        f"(N, H, W, 3) images") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise UserError(f"{what} {path}: {key} is {images.dtype} {tuple(images.shape)}, not uint8 (N, H, W, 3) with "
                        f"N >= 1; {array_fix(images)}")
    return images


def array_fix(images: np.ndarray) -> str:
    """The one conversion that makes ``images`` uint8 (N, H, W, 3), for the error message: only what is wrong."""
    fixes = []
    if images.dtype != np.uint8:
        fixes.append("np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]" if images.dtype.kind == "f"
                     else "x.astype(np.uint8) for values in [0, 255]")
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] != 3:
        fixes.append("x.transpose(0, 2, 3, 1) for channels first (N, C, H, W)")
    elif images.ndim == 3:
        fixes.append("np.repeat(x[..., None], 3, axis=-1) for grey images (N, H, W)")
    if images.ndim == 4 and 1 in (images.shape[1], images.shape[-1]):
        fixes.append("np.repeat(x, 3, axis=-1) for one channel (channels last)")
    if not len(images):
        fixes.append("save at least one image")
    return "convert it: " + "; ".join(fixes) if fixes else "save the images as uint8 (N, H, W, 3), channels last"


def load_npz_labels(path) -> np.ndarray | None:
    """The class labels saved beside the images of an .npz (key ``labels``, or ``arr_1`` as the ADM sampler saves a
    class-conditional batch), or None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in ("labels", "arr_1") if k in z.files), None)
            labels = z[key] if key else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "iu":
        return None
    return labels.astype(np.int64)


def size_counts(source: "ImageSource", limit: int | None = None) -> dict[str, int]:
    """How many images of each size (``"WxH"``) a folder holds, read from the file headers (no decoding); an array
    has one size. ``limit``: look at that many files at most."""
    files = source.files()
    if files is None:
        item = source.item(0) if len(source) else None
        return {f"{item.shape[1]}x{item.shape[0]}": len(source)} if isinstance(item, np.ndarray) else {}
    counts: dict[str, int] = {}
    for f in files[:limit]:
        try:
            with Image.open(f) as image:
                size = f"{image.size[0]}x{image.size[1]}"
        except UNREADABLE_ERRORS:
            continue  # reported when the image is read
        counts[size] = counts.get(size, 0) + 1
    return counts


def open_images(path, what: str = "--samples"):
    """A folder of images -> its files; an .npz -> its uint8 array."""
    path = Path(path)
    if path.suffix.lower() == ".npz" and path.is_file():
        return load_image_array(path, what)
    return image_files(path, what)


class ImageSource(torch.utils.data.Dataset):
    """Uniform read access to images: a folder of images or an .npz (paths), a list of image files, a uint8
    (N, H, W, 3) array, a list of PIL images, or a dataset whose items are ``(PIL image, label)`` (the data
    contract) or PIL images. ``indices`` selects a subset. A file that cannot be decoded is a one-line UserError
    naming it."""

    def __init__(self, images, indices: Sequence[int] | None = None, what: str = "--samples"):
        if isinstance(images, (str, os.PathLike)):
            images = open_images(images, what)
        self.images = images
        self.indices = None if indices is None else list(indices)

    def __len__(self):
        return len(self.images) if self.indices is None else len(self.indices)

    def item(self, i):
        return self.images[i if self.indices is None else self.indices[i]]

    def name(self, i) -> str:
        """A stable name of item ``i``: its file name (with its folder) for files, else its position."""
        item = self.item(i)
        if isinstance(item, (str, os.PathLike)):
            return f"{Path(item).parent.name}/{Path(item).name}"
        return f"#{i if self.indices is None else self.indices[i]}"

    def files(self) -> list[Path] | None:
        """The image files, in order, when every item is a file; else None."""
        items = [self.item(i) for i in range(len(self))] if isinstance(self.images, list) else []
        return [Path(f) for f in items] if items and all(isinstance(f, (str, os.PathLike)) for f in items) else None

    def __getitem__(self, i) -> Image.Image:
        item = self.item(i)
        if isinstance(item, tuple):  # (image, label) from an ImageDataset
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as f:
                    return f.convert("RGB")
            except UNREADABLE_ERRORS as e:
                raise UserError(f"{item} cannot be decoded ({first_line(e)}): replace or delete it (in a dogbench "
                                f"sample folder, rerun the same `dogbench sample` command to remake it)") from None
        if isinstance(item, np.ndarray):
            return Image.fromarray(np.asarray(item)).convert("RGB")
        return item.convert("RGB")


class ImageSet(torch.utils.data.Dataset):
    """A folder of images or an .npz as a reference set (the data contract of ``reference_stats``: ``(image,
    label)`` items, ``name``, ``split``, ``resolution``, ``fingerprint()``). Its one split is ``all``."""

    def __init__(self, path, what: str = "--reference"):
        self.path = Path(path).expanduser()
        self.source = ImageSource(self.path, what=what)
        self.name, self.split = self.path.stem or "images", "all"
        self.resolution = max(self.source[0].size)  # of the first image: the feature networks' input choice
        self._fingerprint: str | None = None

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return self.source[i], 0

    def subset(self, indices) -> ImageSource:
        return ImageSource(self.source.images, list(indices))

    def fingerprint(self) -> str:
        """Changes when the images change: the .npz's sha256, or each file's name, size and mtime."""
        if self._fingerprint is None:
            if self.path.is_file():
                self._fingerprint = cached_file_sha256(self.path)[:16]
            else:
                stamps = [(str(f.relative_to(self.path)), f.stat().st_size, f.stat().st_mtime_ns)
                          for f in self.source.files()]
                self._fingerprint = hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]
        return self._fingerprint


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
    bar = tqdm(total=len(mine), desc=desc or f"{network.name} features", unit="img", disable=not progress or rank > 0,
               leave=False)
    try:
        with tf32(False):  # true fp32 on every GPU (see the module docstring of benchmark.devices)
            for batch in loader:
                feats = network.forward(batch.to(device, non_blocking=True)).cpu()
                stats.update(feats, torch.as_tensor(mine[done:done + len(feats)]))
                done += len(feats)
                bar.update(len(feats))
    except UserError as e:  # an undecodable image; from a loader process the message is its whole traceback
        raise UserError(str(e).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
    finally:
        bar.close()
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
