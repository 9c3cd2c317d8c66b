"""``dogbench evaluate`` and ``evaluate_samples``: sample-quality metrics of a set of generated images against a
dataset's reference statistics, with the protocol that produced every number.

Metrics (name -> feature space, kind):
  fid          FID Inception-V3 (pytorch-fid weights), Frechet distance
  fd_dinov2    DINOv2 ViT-L/14 CLS token, Frechet distance
  prdc         DINOv2 ViT-L/14, precision / recall / density / coverage (k=5)
  fd_effnet    EfficientNet-Lite0 (offline stand-in, NOT FID), Frechet distance
  prdc_effnet  EfficientNet-Lite0, precision_effnet / recall_effnet / density_effnet / coverage_effnet
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterable

from benchmark.cli import UserError
from benchmark.io import atomic_write_json, config_hash, read_json
from benchmark.metrics.dinov2 import dinov2_network
from benchmark.metrics.effnet import effnet_input_size, effnet_network
from benchmark.metrics.features import ImageSource, default_device, extract_features, png_files
from benchmark.metrics.frechet import frechet_distance, gaussian_stats
from benchmark.metrics.inception import fid_inception_network
from benchmark.metrics.prdc import MAX_POINTS, NEAREST_K, SUBSAMPLE_SEED, prdc, subsample
from benchmark.metrics.reference import MAX_IMAGES, reference_stats, subset_indices

DEFAULT_METRICS = ("fid", "fd_dinov2", "prdc")
# metric -> (feature space, kind)
METRICS = {
    "fid": ("inception", "fd"),
    "fd_dinov2": ("dinov2", "fd"),
    "prdc": ("dinov2", "prdc"),
    "fd_effnet": ("effnet", "fd"),
    "prdc_effnet": ("effnet", "prdc"),
}
PRDC_KEYS = ("precision", "recall", "density", "coverage")


def value_keys(metric: str) -> list[str]:
    """The keys a metric writes into ``metrics``: its name, or the four PRDC values (suffixed by their space)."""
    if METRICS[metric][1] == "fd":
        return [metric]
    suffix = "" if metric == "prdc" else "_" + metric.split("_", 1)[1]
    return [f"{k}{suffix}" for k in PRDC_KEYS]


def parse_metrics(metrics: str | Iterable[str]) -> list[str]:
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {','.join(unknown) or '(none)'}: choose from {','.join(METRICS)}")
    return list(dict.fromkeys(names))


def build_network(space: str, *, resolution: int | None = None, inception_weights=None, dinov2_hub_dir=None,
                  dinov2_weights=None):
    if space == "inception":
        return fid_inception_network(inception_weights)
    if space == "dinov2":
        return dinov2_network(dinov2_hub_dir, dinov2_weights)
    if space == "effnet":
        return effnet_network(effnet_input_size(resolution))
    raise ValueError(f"unknown feature space {space!r}")


def samples_fingerprint(samples_dir) -> str:
    """Changes when the PNG set changes (count, names, sizes, mtimes): old metrics.json entries are then dropped."""
    entries = []
    for f in png_files(samples_dir):
        st = f.stat()
        entries.append((str(f.relative_to(samples_dir)), st.st_size, st.st_mtime_ns))
    return config_hash(entries, length=16)


def resolve_dataset(dataset, ref_split: str, data_root):
    if not isinstance(dataset, str):
        return dataset  # an ImageDataset already (its own split is the reference split)
    from benchmark.data import get_dataset

    return get_dataset(dataset, split=ref_split, root=data_root)


def evaluate_samples(samples, dataset, metrics: str | Iterable[str] = DEFAULT_METRICS, *, ref_split: str = "all",
                     data_root=None, inception_weights=None, dinov2_hub_dir=None, dinov2_weights=None,
                     batch_size: int = 50, device=None, num_workers: int | None = None, cache_dir=None,
                     max_images: int | None = None, networks: dict | None = None, out=None,
                     progress: bool = True) -> dict[str, Any]:
    """Compute ``metrics`` of ``samples`` against ``dataset``'s reference statistics.

    samples: a directory of PNGs (recursive), a uint8 (N, H, W, 3) array, a list of PIL images, or an image dataset.
    dataset: a registry name (loaded with ``split=ref_split``, ``root=data_root``) or an ImageDataset.
    networks: optional {"inception"|"dinov2"|"effnet": FeatureNetwork} overriding the built-in networks.
    out: where to write the result json; default ``<samples dir>/metrics.json`` when samples is a directory, and
      nothing is written for in-memory samples unless ``out`` is given.
    Returns {"metrics": {name: value}, "protocol": {metric: {...}}, ...}; PRDC adds its four values.
    """
    names = parse_metrics(metrics)
    max_images = MAX_IMAGES if max_images is None else max_images
    samples_dir = Path(samples) if isinstance(samples, (str, os.PathLike)) else None
    source = ImageSource(samples)
    if source.indices is None:
        source.indices = subset_indices(len(source), max_images)
    ref = resolve_dataset(dataset, ref_split, data_root)
    # Load every network first (on the CPU): a missing weights file fails in seconds, not after an hour of FID.
    nets = {space: (networks or {}).get(space) or build_network(
                space, resolution=getattr(ref, "resolution", None), inception_weights=inception_weights,
                dinov2_hub_dir=dinov2_hub_dir, dinov2_weights=dinov2_weights)
            for space in dict.fromkeys(METRICS[m][0] for m in names)}

    values: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    for space, net in nets.items():  # one network on the device at a time
        feats = extract_features(net, source, batch_size=batch_size, device=device, num_workers=num_workers,
                                 progress=progress, desc=f"{net.name} samples")
        ref_stats = reference_stats(ref, net, cache_dir=cache_dir, batch_size=batch_size, device=device,
                                    num_workers=num_workers, max_images=max_images, progress=progress)
        common = {**net.protocol(), "n_samples": len(feats), "n_reference": ref_stats.n_images,
                  "reference": {k: ref_stats.protocol[k] for k in ("dataset", "split", "fingerprint", "n_dataset")},
                  "max_images": max_images, "subsample_seed": SUBSAMPLE_SEED}
        for metric in (m for m in names if METRICS[m][0] == space):
            if METRICS[metric][1] == "fd":
                values[metric] = frechet_distance(*gaussian_stats(feats), ref_stats.mu, ref_stats.sigma)
                protocols[metric] = {**common, "statistic": "Frechet distance, float64, eigh-based trace sqrt"}
            else:
                fake = subsample(feats, MAX_POINTS)
                result = prdc(ref_stats.prdc_features, fake, k=NEAREST_K, device=device or default_device())
                values.update(zip(value_keys(metric), (result[k] for k in PRDC_KEYS)))
                protocols[metric] = {**common, "statistic": "PRDC (Naeem et al. 2020), Euclidean k-NN", "k": NEAREST_K,
                                     "n_samples_used": len(fake), "n_reference_used": len(ref_stats.prdc_features)}
        net.to("cpu")
        _free_device_memory()

    result = {
        "metrics": values, "protocol": protocols, "n_samples": len(source),
        "samples": str(samples_dir) if samples_dir else f"<{type(samples).__name__}>",
        "dataset": getattr(ref, "name", None), "ref_split": getattr(ref, "split", ref_split),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    out = Path(out) if out else (samples_dir / "metrics.json" if samples_dir else None)
    if out is not None:
        result = _merge_into(out, result, samples_fingerprint(samples_dir) if samples_dir else None)
        atomic_write_json(out, result)
    return result


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
        for key in value_keys(metric):
            merged_values.pop(key, None)
    merged_values.update(result["metrics"])
    merged_protocol.update(result["protocol"])
    return {**result, "metrics": merged_values, "protocol": merged_protocol}


def _free_device_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- CLI ---------------------------------------------------------------------------------------------------------


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="FID / FD_DINOv2 / PRDC of generated samples against a dataset",
        description="Compute sample-quality metrics of a directory of generated PNGs against a dataset's cached "
                    "reference statistics; writes metrics.json (values + protocol) into the samples directory.")
    p.add_argument("--samples", required=True, metavar="DIR", help="directory of generated *.png (searched recursively)")
    p.add_argument("--dataset", required=True, metavar="NAME", help="reference dataset registry name, e.g. caltech101-32")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                   help=f"comma-separated, from {','.join(METRICS)} (default: %(default)s)")
    p.add_argument("--ref-split", default="all", choices=("all", "train", "test"),
                   help="reference images (default: %(default)s, as the public DoG reproduction)")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="dataset root (default: $DOGBENCH_DATA, else ../shared/data, else ./data)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for FID (default: the torch hub checkpoints dir)")
    p.add_argument("--dinov2-hub-dir", default=None, metavar="DIR",
                   help="local clone of facebookresearch/dinov2 (default: the torch hub cache, else online)")
    p.add_argument("--dinov2-weights", default=None, metavar="PATH",
                   help="dinov2_vitl14_pretrain.pth (default: the torch hub checkpoints dir)")
    p.add_argument("--batch-size", type=int, default=50, metavar="N", help="images per forward pass (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="image decoding/resizing worker processes (default: 0 on cpu, min(8, cpus) on gpu)")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES, metavar="N",
                   help="use at most N samples and N reference images, a seeded subset, as dgm-eval's --nsample "
                        "(default: %(default)s)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="reference statistics cache (default: $DOGBENCH_RESULTS/cache/reference_stats)")
    p.add_argument("--out", default=None, metavar="PATH", help="result json (default: SAMPLES/metrics.json)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    result = evaluate_samples(
        args.samples, args.dataset, args.metrics, ref_split=args.ref_split, data_root=args.data_root,
        inception_weights=args.inception_weights, dinov2_hub_dir=args.dinov2_hub_dir,
        dinov2_weights=args.dinov2_weights, batch_size=args.batch_size, device=args.device,
        num_workers=args.num_workers, cache_dir=args.cache_dir, max_images=args.max_images, out=args.out,
        progress=not args.no_progress)
    for name, value in result["metrics"].items():
        print(f"{name:>18s}  {value:.6g}")
    print(f"wrote {Path(args.out) if args.out else Path(args.samples) / 'metrics.json'}")
    return 0
