"""Labelled features of every image of one split of a real dataset, cached like the reference statistics: the
fine-tuning ("train") and held-out images of the copy rate, and the labelled real images of the class KID.

One file per (dataset, split, data fingerprint, network + weights sha256 + preprocessing, cap), named by that key
(``features-<dataset>-<split>-<network>-<hash>.npz`` in the reference cache folder, shared by every experiment and
by ``dogbench evaluate``), with the sha256 of its arrays checked on every read. It holds the (N, D) float32
features, each row's class label and its index in the split (``rows``: a seeded subset when the split has more than
``max_images`` images, else every image in order).

Which split is which: benchmark.metrics.memorization.SPLITS_TEXT.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.claims import claim
from benchmark.distributed import main_writes, rank_world
from benchmark.io import config_hash
from benchmark.metrics.features import FeatureNetwork, ImageSource, feature_statistics
from benchmark.metrics.prdc import SUBSAMPLE_SEED
from benchmark.metrics.reference import (MAX_IMAGES, announced, default_cache_dir, load_arrays, save_arrays,
                                         subset_indices)

CACHE_VERSION = 1


@dataclass
class SplitFeatures:
    features: np.ndarray         # (N, D) float32, in the order of ``rows``
    labels: np.ndarray           # (N,) int64 class of each row (0 for an unlabelled image set)
    rows: np.ndarray             # (N,) int64 index of each row in the split
    protocol: dict[str, Any]     # everything the features depend on (also the cache key)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def join(cls, parts: list["SplitFeatures"]) -> "SplitFeatures":
        """Several splits as one labelled set (e.g. train + test as "all"); ``rows`` keep each split's own index."""
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.rows for p in parts]), {"parts": [p.protocol for p in parts]}, None)


def item_keys(dataset) -> list | None:
    """What identifies each image of ``dataset`` across splits of one dataset (its file, or its row of the .npz), or
    None for a set that does not say."""
    files, root = getattr(dataset, "files", None), getattr(dataset, "root", None)
    if isinstance(files, list) and root is not None:  # FileImageDataset
        return [str(Path(root) / f) for f in files]
    arrays, rows = getattr(dataset, "arrays", None), getattr(dataset, "rows", None)
    if arrays is not None and rows is not None:  # ArrayImageDataset: rows of one .npz
        return [(str(arrays.path), int(r)) for r in rows]
    path = getattr(dataset, "path", None)
    if path is not None and hasattr(dataset, "source"):  # ImageSet: a folder or an .npz
        return [(str(path), i) for i in range(len(dataset))]
    return None


def features_in_order(target, parts) -> np.ndarray | None:
    """The features of every image of ``target`` in its order, gathered from ``parts`` ([(dataset, SplitFeatures)]:
    e.g. its train and test splits), or None when some image is in none of them."""
    keys = item_keys(target)
    if keys is None:
        return None
    where = {}
    for dataset, split in parts:
        part_keys = item_keys(dataset)
        if part_keys is not None:
            for position, row in enumerate(split.rows):
                where[part_keys[int(row)]] = (split.features, position)
    if not all(k in where for k in keys):
        return None
    return np.stack([where[k][0][where[k][1]] for k in keys]) if keys else None


def split_protocol(dataset, network: FeatureNetwork, max_images: int | None) -> dict[str, Any]:
    return {"cache_version": CACHE_VERSION, "content": "features and labels of every image",
            "dataset": dataset.name, "split": dataset.split, "fingerprint": dataset.fingerprint(),
            "n_dataset": len(dataset), "network": network.protocol(), "max_images": max_images,
            "subsample_seed": SUBSAMPLE_SEED}


def split_cache_path(protocol: dict[str, Any], cache_dir) -> Path:
    name = f"features-{protocol['dataset']}-{protocol['split']}-{protocol['network']['network']}-" \
           f"{config_hash(protocol)}.npz"
    return Path(cache_dir) / name


def load_split_features(path) -> SplitFeatures:
    """A cached file written by ``split_features`` (content hash checked)."""
    arrays = load_arrays(path, "split features")
    return SplitFeatures(arrays["features"], arrays["labels"], arrays["rows"], json.loads(str(arrays["protocol"])),
                         Path(path))


def _load(path: Path, protocol: dict) -> SplitFeatures | None:
    if not path.is_file():
        return None
    found = load_split_features(path)
    return found if found.protocol == json.loads(json.dumps(protocol, default=str)) else None


def split_features(dataset, network: FeatureNetwork, *, cache_dir=None, batch_size: int = 50, device=None,
                   num_workers: int | None = None, max_images: int | None = MAX_IMAGES, progress: bool = True,
                   what: str = "features") -> SplitFeatures:
    """Features and labels of every image of ``dataset`` (an ImageDataset, or any set with the data contract) in
    ``network``'s space, from the cache when its key matches, else computed (each rank its share) and cached.
    ``what`` names the pass in the progress line (e.g. "train features")."""
    protocol = split_protocol(dataset, network, max_images)
    path = split_cache_path(protocol, cache_dir or default_cache_dir())
    cached = _load(path, protocol)
    if cached is not None:
        return cached
    if rank_world()[1] == 1:  # another process may be computing them already
        with claim(path, f"{what} {path.name}", wait=True):
            cached = _load(path, protocol)
            if cached is not None:
                return cached
            return _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images,
                            progress, what)
    return _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images, progress, what)


def _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images, progress,
             what) -> SplitFeatures:
    rows = subset_indices(len(dataset), max_images)
    rows = np.arange(len(dataset), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    done = announced(what, dataset, network, len(rows), path)
    stats = feature_statistics(network, ImageSource(dataset, rows.tolist()), batch_size=batch_size, device=device,
                               num_workers=num_workers, progress=progress,
                               desc=f"{what} {dataset.name}/{dataset.split} ({network.name})")
    done()
    labels = getattr(dataset, "labels", None)
    labels = np.zeros(len(rows), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)[rows]
    with main_writes() as mine:  # every rank computed its share; rank 0 writes the file
        if mine:
            save_arrays(path, features=stats["features"], labels=labels, rows=rows,
                        protocol=np.array(json.dumps(protocol, default=str)))
    return SplitFeatures(stats["features"], labels, rows, json.loads(json.dumps(protocol, default=str)), path)
