"""The nearest-neighbour figure of a sample set: each sample beside its nearest fine-tuning images in a feature
space, the closest pairs first, so a reader sees at a glance whether the samples nearest the training set are copies
of it (the copy rate, benchmark.metrics.memorization, counts them).

    pairs = closest_pairs(sample_features, train.features, k=3, count=8, rows=train.rows)   # metrics side
    plot_nearest_neighbours(sample_images, train_images, pairs, "plots/neighbours-dog-w1.5.png", threshold=tau)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from benchmark.harness.plots import save_figure
from benchmark.metrics.features import ImageSource

COPY_COLOUR = "tab:red"


def plot_nearest_neighbours(samples, train, pairs: Sequence[dict], path: str | os.PathLike, *,
                            threshold: Optional[float] = None, title: Optional[str] = None,
                            space: str = "features") -> Path:
    """One row per entry of ``pairs`` (``closest_pairs``: closest first): the sample, then its nearest fine-tuning
    images, each titled with its distance in ``space``; a distance at or under the copy ``threshold`` is red (that
    sample counts as a copy). ``samples`` and ``train``: image files, uint8 (N, H, W, 3) arrays, PIL images or
    image datasets, indexed by the pairs' "sample" and "neighbours"."""
    if not pairs:
        raise ValueError("no pairs to draw: pass closest_pairs(...) of at least one sample")
    samples, train = ImageSource(samples), ImageSource(train)
    rows, k = len(pairs), max(len(p["neighbours"]) for p in pairs)
    fig = Figure(figsize=(1.6 * (k + 1), 1.7 * rows + (0.5 if title else 0)))
    axes = np.asarray(fig.subplots(rows, k + 1, squeeze=False))
    for r, pair in enumerate(pairs):
        axes[r, 0].imshow(np.asarray(samples[pair["sample"]]), interpolation="nearest")
        axes[r, 0].set_title(f"sample {pair['sample']}", fontsize=8)
        for c, (index, distance) in enumerate(zip(pair["neighbours"], pair["distances"]), start=1):
            axes[r, c].imshow(np.asarray(train[index]), interpolation="nearest")
            copy = threshold is not None and distance <= threshold
            axes[r, c].set_title(f"train {index}: d={distance:.3g}", fontsize=8,
                                 color=COPY_COLOUR if copy else "black")
            if copy:
                for spine in axes[r, c].spines.values():
                    spine.set_edgecolor(COPY_COLOUR)
                    spine.set_linewidth(2)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    note = f"nearest fine-tuning images in {space}" + (f"; red: d <= copy threshold {threshold:.3g}"
                                                      if threshold is not None else "")
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=9)
    return save_figure(fig, path)
