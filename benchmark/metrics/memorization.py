"""Memorization: how many samples are copies of the fine-tuning images (the copy rate), and which fine-tuning
images each sample is nearest to (for the nearest-neighbour figure).

Definition (in the spirit of Meehan et al. 2020, "A Non-Parametric Test to Detect Data-Copying in Generative
Models", and of the authenticity of Alaa et al. 2022, "How Faithful is your Synthetic Data?")
    In one feature space, let d(x) be the Euclidean distance from x to its nearest fine-tuning ("train") image. Real
    images of the target that the model was NOT fine-tuned on ("held out") show how near an unseen image of the
    target falls to the train set by chance; their d values set the threshold

        tau = the COPY_QUANTILE (5%) quantile of d(h) over the held-out images h   (numpy's linear interpolation)

    and the copy rate of a sample set is the fraction of samples with d(x) <= tau: samples nearer a fine-tuning image
    than all but the closest 5% of held-out real images are. A generator that draws new images of the target scores
    about 0.05 (held-out images themselves score 0.05 by construction); one that reproduces its fine-tuning images
    scores up to 1. The train and held-out features are cached like the reference statistics (benchmark.metrics.splits),
    and held fixed in the bootstrap: a resample only counts its samples' flags.

    A threshold of 0 (held-out images that are copies of train images) would count nothing, so it is an error.

Why not torchmetrics' MiFID (``memorization_informed_fid``): its memorization term is the mean cosine distance of
the samples to the *reference* set, compared to a fixed 0.1 and folded into FID as a penalty; the benchmark needs a
fraction with an interval, against the fine-tuning images, and calibrated by held-out images of the same target.
"""
from __future__ import annotations

import numpy as np

from benchmark.metrics.intervals import _counts
from benchmark.metrics.prdc import _as_tensor, _distances
from benchmark.metrics.registry import METRICS

COPY_QUANTILE = 0.05

# Which split is which, for PROTOCOL.md and the metrics JSON (the harness's protocol writer includes it).
SPLITS_TEXT = ("copy rate: \"train\" = the images the model was fine-tuned on (the experiment's finetune.split: the "
               "dataset's train split, or every image with split: all), \"held out\" = the dataset's test split, "
               "images of the same target the model never saw; a sample is a copy when it is at most as far from "
               "its nearest train image (in the metric's feature space) as the closest 5% of held-out images are")


def held_out_split(train_split: str) -> str | None:
    """The split of real images the model was not fine-tuned on: ``test`` for a ``train`` fine-tune, none for
    ``all``."""
    return {"train": "test", "test": "train"}.get(train_split)


def check_held_out(metrics, train_split: str) -> None:
    """An experiment's copy rate needs real images it was not fine-tuned on (they calibrate the threshold): a
    ValueError naming the fix when ``train_split`` leaves none."""
    copy = [m for m in metrics if METRICS[m].kind == "copy"]
    if copy and held_out_split(train_split) is None:
        raise ValueError(f"evaluation.metrics lists {', '.join(copy)}, which needs real images the model was not "
                         f"fine-tuned on, but finetune.split={train_split} fine-tunes on every image; set "
                         f"finetune.split=train or drop {', '.join(copy)}")


def nearest(queries, keys, k: int = 1, *, device="cpu", block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``keys`` for every row of ``queries`` (Euclidean, float64): (distances (n, k),
    indices (n, k)), nearest first."""
    q, x = _as_tensor(queries, device), _as_tensor(keys, device)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(f"need two (N, D) feature sets of equal D, got {tuple(q.shape)} and {tuple(x.shape)}")
    k = min(k, len(x))
    dist, index = [], []
    for i in range(0, len(q), block):
        d = _distances(q[i:i + block], x)
        value, where = d.topk(k, dim=1, largest=False)
        dist.append(value.cpu().numpy())
        index.append(where.cpu().numpy())
    return np.concatenate(dist), np.concatenate(index)


def copy_threshold(held_out_distances: np.ndarray, quantile: float = COPY_QUANTILE) -> float:
    """tau: the ``quantile`` of the held-out images' distances to their nearest train image."""
    d = np.asarray(held_out_distances, dtype=np.float64)
    if d.ndim != 1 or len(d) < 1:
        raise ValueError("the copy threshold needs the distance of at least one held-out image")
    tau = float(np.quantile(d, quantile))
    if tau <= 0:
        raise ValueError(f"{(d <= 0).mean():.0%} of the held-out images are copies of train images (distance 0), so "
                         f"the copy threshold is 0; hold out images the model was not fine-tuned on")
    return tau


class CopyResampler:
    """The copy rate of a sample feature set (n, D) against train features (m, D) and a threshold ``tau``
    (``copy_threshold``), or of a resample of the samples; ``resampler()`` is the full set's. ``distances`` (n,),
    the samples' nearest-train distances, skips the search when known."""

    def __init__(self, fake, train, tau: float, *, distances: np.ndarray | None = None, device="cpu"):
        if distances is None:
            distances = nearest(fake, train, 1, device=device)[0][:, 0]
        self.distances = np.asarray(distances, dtype=np.float64)
        self.n, self.tau = len(self.distances), float(tau)
        self.is_copy = (self.distances <= self.tau).astype(np.float64)

    def __call__(self, indices: np.ndarray | None = None) -> float:
        counts = _counts(indices, self.n)
        return float(counts @ self.is_copy / counts.sum())


def closest_pairs(fake, train, k: int = 3, count: int | None = None, *, rows=None, device="cpu") -> list[dict]:
    """For the nearest-neighbour figure: the samples sorted by the distance to their nearest train image, closest
    first, each with its ``k`` nearest train images: [{"sample", "neighbours": [train index, ...], "distances":
    [...]}] (``count`` samples at most). ``rows`` maps a row of ``train`` to the image's index in its split (a
    SplitFeatures' ``rows``), so the neighbours index the dataset."""
    dist, index = nearest(fake, train, k, device=device)
    if rows is not None:
        index = np.asarray(rows)[index]
    order = np.argsort(dist[:, 0], kind="stable")[:count]
    return [{"sample": int(i), "neighbours": [int(j) for j in index[i]], "distances": [float(d) for d in dist[i]]}
            for i in order]
