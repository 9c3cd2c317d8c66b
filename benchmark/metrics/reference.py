"""Reference statistics: the real images' Gaussian (mean, covariance) and PRDC feature subset in one feature space.

Computing them means pushing every reference image through a large network, so they are cached, one file per
(dataset, split, data fingerprint, network + weights sha256 + preprocessing, subsampling). The key is in the file
name: change any of them (new data on disk, other weights, another resize) and a new file is computed; the old one
is left for the other configuration. Files are written atomically, so an interrupted run never leaves a half file,
and each holds the sha256 of its arrays (``content_sha256``), checked when it is read: a corrupted file is a one-line
error naming it (delete it and it is recomputed).

Reference set: the dataset split named by the caller; the public DoG reproduction compares against all images
(train + test). Like dgm-eval, at most ``max_images`` (50k) reference images are used, a seeded random subset.
"""
from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.claims import claim
from benchmark.distributed import main_writes, rank_world
from benchmark.io import IntegrityError, atomic_open, check_sha256, config_hash, content_sha256, results_root
from benchmark.metrics.features import FeatureNetwork, ImageSource, feature_statistics
from benchmark.metrics.frechet import gaussian_stats
from benchmark.metrics.prdc import MAX_POINTS, SUBSAMPLE_SEED, subsample

CACHE_VERSION = 1
MAX_IMAGES = 50_000  # dgm-eval's --nsample default


@dataclass
class ReferenceStats:
    mu: np.ndarray               # (D,) float64
    sigma: np.ndarray            # (D, D) float64
    prdc_features: np.ndarray    # (<= prdc_points, D) float32
    n_images: int                # images the Gaussian was fitted to
    protocol: dict[str, Any]     # everything the numbers depend on (also the cache key)
    path: Path | None = None     # cache file


def default_cache_dir() -> Path:
    return results_root() / "cache" / "reference"  # the same folder `dogbench run` uses


def subset_indices(n: int, max_images: int | None, seed: int = SUBSAMPLE_SEED) -> list[int] | None:
    if max_images is None or n <= max_images:
        return None
    return sorted(np.random.default_rng(seed).choice(n, max_images, replace=False).tolist())


def reference_protocol(dataset, network: FeatureNetwork, max_images: int | None, prdc_points: int | None) -> dict[str, Any]:
    return {
        "cache_version": CACHE_VERSION,
        "dataset": dataset.name, "split": dataset.split, "fingerprint": dataset.fingerprint(), "n_dataset": len(dataset),
        "network": network.protocol(),
        "max_images": max_images, "prdc_points": prdc_points, "subsample_seed": SUBSAMPLE_SEED,
    }


def cache_path(protocol: dict[str, Any], cache_dir) -> Path:
    name = f"{protocol['dataset']}-{protocol['split']}-{protocol['network']['network']}-{config_hash(protocol)}.npz"
    return Path(cache_dir) / name


CONTENT_HASH = "content_sha256"


def save_arrays(path, **arrays) -> None:
    """An .npz of ``arrays`` plus their ``content_sha256``, written atomically (the reference and sample-feature
    caches)."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays, **{CONTENT_HASH: np.array(content_sha256(arrays))})


def load_arrays(path, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz written by ``save_arrays``, its content hash checked (files written before the hash
    existed are read unchecked). Unreadable or corrupted: an IntegrityError that says to delete the file;
    ``what`` says what it holds."""
    rebuild = f"delete it and the {what} are computed again"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise IntegrityError(f"{path} is unreadable ({type(e).__name__}); {rebuild}") from None
    recorded = arrays.pop(CONTENT_HASH, None)
    if recorded is not None:
        check_sha256(path, content_sha256(arrays), str(recorded), rebuild)
    return arrays


def _stats(arrays: dict, path: Path) -> ReferenceStats:
    return ReferenceStats(arrays["mu"], arrays["sigma"], arrays["prdc_features"], int(arrays["n_images"]),
                          json.loads(str(arrays["protocol"])), Path(path))


def load_reference(path) -> ReferenceStats:
    """A cached reference-statistics file as written by ``reference_stats``."""
    return _stats(load_arrays(path, "reference statistics"), path)


def _load(path: Path, protocol: dict[str, Any]) -> ReferenceStats | None:
    """The cached statistics of ``protocol``, or None when there are none (or they are of another protocol)."""
    if not path.is_file():
        return None
    stats = load_reference(path)
    return stats if stats.protocol == json.loads(json.dumps(protocol, default=str)) else None


def reference_stats(dataset, network: FeatureNetwork, *, cache_dir=None, batch_size: int = 50, device=None,
                    num_workers: int | None = None, max_images: int | None = MAX_IMAGES,
                    prdc_points: int | None = MAX_POINTS, progress: bool = True,
                    known_features=None) -> ReferenceStats:
    """Reference statistics of ``dataset`` (an ImageDataset per the data contract) in ``network``'s space, from the
    cache when its key matches, else computed and cached. ``known_features``: a callable returning the features of
    every image of ``dataset`` in its order when other caches already hold them (the split features of its train
    and test splits), else None; used instead of a pass over the images when the set is not subsampled."""
    protocol = reference_protocol(dataset, network, max_images, prdc_points)
    path = cache_path(protocol, cache_dir or default_cache_dir())
    cached = _load(path, protocol)
    if cached is not None:
        return cached
    if rank_world()[1] == 1:  # one process: another `dogbench` process may be computing these already
        with claim(path, f"reference statistics {path.name}", wait=True):
            cached = _load(path, protocol)
            if cached is not None:
                return cached
            return _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images,
                            prdc_points, progress, known_features)
    return _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images, prdc_points,
                    progress, known_features)


def log(message: str) -> None:
    """A progress line, from rank 0 only, in the harness's format: long feature passes are never silent, with or
    without progress bars (a log file gets no bars)."""
    if rank_world()[0] == 0:
        print(f"[dogbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def announced(what: str, dataset, network, n: int, path: Path):
    """Log the start and the end (with its duration) of a feature pass that is cached in ``path``."""
    log(f"{what} of {dataset.name}/{dataset.split} in {network.name} features: {n} images, once (cached in "
        f"{path.parent} for every later run)")
    start = time.monotonic()
    return lambda: log(f"{what} of {dataset.name}/{dataset.split} ({network.name}) done in "
                       f"{time.monotonic() - start:.0f} s")


def _compute(dataset, network, protocol, path, batch_size, device, num_workers, max_images, prdc_points,
             progress, known_features=None) -> ReferenceStats:
    rows = subset_indices(len(dataset), max_images)
    features = known_features() if known_features is not None and rows is None else None
    if features is not None and len(features) == len(dataset):  # the same features, already extracted
        log(f"reference statistics of {dataset.name}/{dataset.split} in {network.name} features: from the cached "
            f"features of its splits ({len(features)} images, no second pass)")
        stats = {"n": len(features), "features": features}
        stats["mu"], stats["sigma"] = gaussian_stats(features)
    else:
        source = ImageSource(dataset, rows)
        done = announced("reference statistics", dataset, network, len(source), path)
        stats = feature_statistics(network, source, batch_size=batch_size, device=device, num_workers=num_workers,
                                   progress=progress, desc=f"reference {dataset.name}/{dataset.split} ({network.name})")
        done()
    prdc_features = subsample(stats["features"], prdc_points)
    with main_writes() as mine:  # every rank computed its share; rank 0 writes the file, the others wait for it
        if mine:
            save_arrays(path, mu=stats["mu"], sigma=stats["sigma"], prdc_features=prdc_features,
                        n_images=np.int64(stats["n"]), protocol=np.array(json.dumps(protocol, default=str)))
    return ReferenceStats(stats["mu"], stats["sigma"], prdc_features, stats["n"],
                          json.loads(json.dumps(protocol, default=str)), path)
