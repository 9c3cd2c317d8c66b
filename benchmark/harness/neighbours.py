"""The nearest-neighbour figure of a sample set: each sample beside its nearest fine-tuning images in a feature
space, the closest pairs first, so a reader sees at a glance whether the samples nearest the training set are copies
of it (the copy rate, benchmark.metrics.memorization, counts them).

    pairs = closest_pairs(sample_features, train.features, k=3, count=8, rows=train.rows)   # metrics side
    plot_nearest_neighbours(sample_images, train_images, pairs, "plots/neighbours-dog-w1.5.png", threshold=tau)

    neighbour_figures(exp, results_dir, report_rows, cards)   # the run's report: one figure per report sample set
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from benchmark.data import get_dataset
from benchmark.harness.plots import save_figure
from benchmark.metrics.features import ImageSource
from benchmark.metrics.memorization import closest_pairs
from benchmark.metrics.registry import METRICS, SPACE_TITLES
from benchmark.sampling.writer import check_sample_set

NEIGHBOURS, PAIRS = 3, 8  # train images beside each sample; samples per figure (the closest ones)

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


def neighbour_figures(exp, results_dir: Path, report_rows, cards: Callable[[Mapping], object]) -> dict[str, Path]:
    """``plots/neighbours_<dataset>_<sample folder>.png`` for every report sample set (runs.csv rows ``report_rows``)
    of an experiment whose card has a copy rate, in that metric's feature space, each sample's copy threshold in red;
    ``cards``: a row -> its SampleSetCard (benchmark.harness.stages.scored_sets). Returns {figure label: path}."""
    copy = next((m for m in exp.evaluation.metrics if METRICS[m].kind == "copy"), None)
    if copy is None or not len(report_rows):
        return {}
    space, figures, train_sets = METRICS[copy].space, {}, {}
    for _, row in report_rows.iterrows():
        card, dataset = cards(row), row["dataset"]
        inputs, n = card.inputs[space], int(row["num_samples"])
        if dataset not in train_sets:  # the images the model was fine-tuned on, indexed by their split row
            train_sets[dataset] = get_dataset(exp.dataset(dataset), split=exp.finetune.split, root=exp.data_dir())
        pairs = closest_pairs(card.features[space], inputs.train.features, NEIGHBOURS, PAIRS,
                              rows=inputs.train.rows, device=inputs.device)
        folder = results_dir / str(row["sample_dir"])
        label = f"neighbours_{dataset}_{folder.name}"
        figures[label] = plot_nearest_neighbours(
            check_sample_set(folder, n).paths, train_sets[dataset], pairs,
            results_dir / "plots" / f"{label}.png", threshold=inputs.copy_tau(), space=SPACE_TITLES[space],
            title=f"{dataset}: {folder.name} ({copy} {card(None, [copy])[copy]:.3f})")
    return figures
