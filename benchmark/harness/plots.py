"""Figures of a benchmark run, drawn with matplotlib's Agg canvas (no display, no global pyplot state) and saved
atomically as PNG.

- ``plot_metric_vs_w``: one metric against w, one panel per dataset: every method with a scale w (CFG, DoG, yours) on
  the selection seeds as a line per parameter setting (error bars = std over selection seeds when there are several),
  a method without w as a dotted line at its best grid point, fine-tune only as a dashed horizontal line (its w is
  1), and the reported numbers (fresh report seeds) as filled markers with their bootstrap intervals.
- ``save_image_grid``: sample images (N, H, W, 3) uint8 -> one grid PNG.
- ``compose_sample_grids``: per-method grid PNGs -> one labelled figure, side by side.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

import pandas as pd

from benchmark.harness.runs import Rows, present_metrics
from benchmark.harness.selection import aggregate_seeds
from benchmark.io import atomic_write_bytes
from benchmark.metrics.registry import lower_is_better

METHOD_STYLE = {  # label, colour
    "none": ("fine-tune only (w=1)", "0.35"),
    "cfg": ("CFG", "tab:blue"),
    "dog": ("DoG", "tab:red"),
}
OTHER_COLOURS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def method_style(method: str, others: Sequence[str]) -> tuple[str, str]:
    """(legend label, colour) of a method: the fixed ones for none / CFG / DoG, the next free colour otherwise."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    return method, OTHER_COLOURS[list(others).index(method) % len(OTHER_COLOURS)] if method in others else "black"


METRIC_LABELS = {
    "fid": "FID",
    "fd_dinov2": "FD$_\\mathrm{DINOv2}$",
    "fd_effnet": "FD$_\\mathrm{EffNet}$ (not FID)",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
}


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _panel_layout(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_metric_vs_w(rows: Rows, metric: str, path: str | os.PathLike, datasets: Optional[Sequence[str]] = None,
                     shared_w1: bool = True, title: Optional[str] = None,
                     board: Optional[pd.DataFrame] = None) -> Path:
    """``metric`` against w for each dataset (one panel each), from selection-phase runs rows (several seeds ->
    mean +- std), with the leaderboard's report-seed numbers and intervals (``board``) on top."""
    agg = aggregate_seeds(rows, shared_w1=shared_w1)
    if metric not in agg.columns:
        raise ValueError(f"no {metric!r} values to plot; the runs have {', '.join(present_metrics(agg)) or 'no metrics'}")
    datasets = list(datasets) if datasets is not None else list(dict.fromkeys(agg["dataset"]))
    n_rows, n_cols = _panel_layout(len(datasets))
    fig = Figure(figsize=(4.2 * n_cols, 3.3 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    better = "lower" if lower_is_better(metric) else "higher"
    others = sorted(m for m in set(agg["method"]) if m not in METHOD_STYLE)
    for ax, dataset in zip(axes, datasets):
        data = agg[(agg["dataset"] == dataset) & agg[metric].notna()]
        guided = [m for m in ("cfg", "dog") if m in set(data["method"])] + [m for m in others if m in set(data["method"])]
        for method in guided:
            rows_of = data[data["method"] == method]
            label, colour = method_style(method, others)
            settings = list(dict.fromkeys(rows_of["params"].fillna("")))
            for k, params in enumerate(settings):
                line = rows_of[rows_of["params"].fillna("") == params].sort_values("w")
                name = f"{label} {params}".strip() if len(settings) > 1 or method in others else label
                style = dict(color=colour, ls=("-", "--", ":", "-.")[k % 4], label=name)
                if line["w"].isna().all():  # no scale w (e.g. cfg+dog's two): its best grid point, dotted
                    best = line[metric].min() if lower_is_better(metric) else line[metric].max()
                    ax.axhline(best, lw=1.2, **{**style, "ls": ":", "label": f"{name} (best of its grid; no w)"})
                    continue
                std = line[f"{metric}_std"].to_numpy(dtype=float)
                if np.isfinite(std).any():
                    ax.errorbar(line["w"], line[metric], yerr=np.nan_to_num(std), marker="o", ms=3.5, capsize=3, **style)
                else:
                    ax.plot(line["w"], line[metric], marker="o", ms=3.5, **style)
        base = data[data["method"] == "none"]
        if not base.empty:
            label, colour = METHOD_STYLE["none"]
            value, std = float(base[metric].iloc[0]), float(base[f"{metric}_std"].iloc[0])
            ax.axhline(value, ls="--", lw=1.2, color=colour, label=label)
            if np.isfinite(std):
                ax.axhspan(value - std, value + std, color=colour, alpha=0.12, lw=0)
        _report_points(ax, board, dataset, metric, others)
        ax.set_title(dataset)
        ax.set_xlabel("guidance scale w")
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} ({better} is better)")
        ax.grid(alpha=0.3)
    for ax in axes[len(datasets):]:
        ax.set_visible(False)
    if len(datasets):
        # below the panel: inside it, the legend hides the curves' ends where guidance goes wrong
        axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _report_points(ax, board: Optional[pd.DataFrame], dataset: str, metric: str, others: Sequence[str] = ()) -> None:
    """The leaderboard's numbers (report seeds) at their w, with their intervals, as filled diamonds (every method
    with a w; the controls have none)."""
    if board is None or not len(board) or metric not in board.columns:
        return
    rows = board[(board["dataset"] == dataset) & (board["method"] != "real") & (board["rule"] != "seed noise")
                 & board[metric].notna() & pd.to_numeric(board["w"], errors="coerce").notna()]
    for i, row in enumerate(rows.itertuples()):
        label, colour = method_style(row.method, others)
        value, low, high = (float(getattr(row, c)) for c in (metric, f"{metric}_low", f"{metric}_high"))
        # a metric every resample gives the same value (precision 1 on a tiny set) ends 1e-16 outside its interval
        ax.errorbar([row.w], [value], yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]], marker="D", ms=6,
                    capsize=4,
                    color=colour, markeredgecolor="black", ls="none",
                    label="leaderboard: report seeds, 95% interval" if i == 0 else None)


def plot_metrics_vs_w(rows: Rows, out_dir: str | os.PathLike, metrics: Optional[Sequence[str]] = None,
                      shared_w1: bool = True, title: Optional[str] = None,
                      board: Optional[pd.DataFrame] = None) -> dict[str, Path]:
    """One ``<metric>_vs_w.png`` per metric (default: every metric with values) in ``out_dir``."""
    agg_metrics = present_metrics(aggregate_seeds(rows, shared_w1=shared_w1))
    metrics = agg_metrics if metrics is None else [m for m in metrics if m in agg_metrics]
    return {m: plot_metric_vs_w(rows, m, Path(out_dir) / f"{m}_vs_w.png", shared_w1=shared_w1, title=title,
                                board=board) for m in metrics}


def image_grid(images: np.ndarray, nrow: Optional[int] = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N, H, W, 3) or (N, H, W) uint8 -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, 3) uint8 image, row-major."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"image_grid needs a non-empty uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = image
    return grid


def save_image_grid(images: np.ndarray, path: str | os.PathLike, nrow: Optional[int] = None, pad: int = 2,
                    scale: int = 1) -> Path:
    """Sample images as one PNG grid, ``nrow`` images per row (default: square), enlarged ``scale`` times
    (nearest neighbour, so 32x32 samples stay sharp)."""
    image = Image.fromarray(image_grid(images, nrow, pad))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def compose_sample_grids(panels: Mapping[str, str | os.PathLike], path: str | os.PathLike,
                         title: Optional[str] = None, ncols: Optional[int] = None, panel_inches: float = 3.2) -> Path:
    """Labelled side-by-side figure of grid PNGs, e.g. {"fine-tune only": a.png, "CFG w=1.5": b.png, ...}."""
    if not panels:
        raise ValueError("compose_sample_grids needs at least one (label, PNG path) panel")
    n_rows, n_cols = _panel_layout(len(panels), ncols or len(panels))
    fig = Figure(figsize=(panel_inches * n_cols, panel_inches * n_rows + (0.4 if title else 0)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (label, png) in zip(axes, panels.items()):
        with Image.open(png) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_axis_off()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150)
