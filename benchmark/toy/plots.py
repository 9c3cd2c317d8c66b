"""Figures of the toy: sample clouds per method, every guided method's guidance field, and every metric against w."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from benchmark.io import atomic_write_bytes  # noqa: E402

from .data import GaussianMixture  # noqa: E402
from .metrics import OOD_RADIUS  # noqa: E402

CLASS_COLORS = plt.get_cmap("tab10").colors
METHOD_STYLE = {"none": ("fine-tune only", "0.3"), "cfg": ("CFG", "tab:red"), "dog": ("DoG", "tab:blue"),
                "cfg+dog": ("CFG+DoG", "tab:purple"), "autoguidance": ("autoguidance", "tab:green"),
                "cfg+APG": ("CFG + APG", "tab:orange"), "dog+APG": ("DoG + APG", "tab:cyan")}
GUIDES = {"cfg": "fine-tuned model, null label K", "dog": "frozen pre-trained model, its null label",
          "cfg+dog": "both null predictions, half w each", "autoguidance": "mid-fine-tune snapshot, same class"}
EXTRA_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:gray")


def style(label: str, index: int = 0) -> Tuple[str, str]:
    """(display name, colour) of a run label; a method the table does not know gets its own name and a spare colour."""
    return METHOD_STYLE.get(label, (label, EXTRA_COLORS[index % len(EXTRA_COLORS)]))


def guided_labels(result) -> List[str]:
    """The guided run labels in run order."""
    return list(dict.fromkeys(r.label for r in result.runs if r.spec.guided))


def save_figure(fig, path) -> Path:
    """Render to memory, then write atomically, so a crash never leaves a half-written PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _draw_domains(ax, source: GaussianMixture, target: GaussianMixture, scale: float = 1.0, label_class: Optional[int] = None):
    """Source mode centres as grey crosses, target modes as their 3-sigma (out-of-domain) circles."""
    s = source.means.numpy() * scale
    ax.scatter(s[:, 0], s[:, 1], marker="+", s=30, c="0.55", linewidths=0.8, zorder=1)
    for k, (mu, std) in enumerate(zip(target.means.numpy(), target.stds.numpy())):
        lw = 2.0 if k == label_class else 1.0
        ax.add_patch(Circle(mu * scale, OOD_RADIUS * std * scale, fill=False, ls="--", lw=lw,
                            ec=CLASS_COLORS[k % 10], zorder=3))


def _scatter_classes(ax, x: np.ndarray, y: np.ndarray, size: float):
    colors = np.array(CLASS_COLORS)[y % 10]
    ax.scatter(x[:, 0], x[:, 1], s=size, c=colors, alpha=0.6, linewidths=0, zorder=2)


def _scatter_samples(ax, x: np.ndarray, y: np.ndarray, target: GaussianMixture, size: float):
    """Samples coloured by the class they were generated for; out-of-domain ones as black crosses."""
    ood = (target.mahalanobis(torch.from_numpy(x).double()).min(dim=1).values > OOD_RADIUS).numpy()
    _scatter_classes(ax, x[~ood], y[~ood], size)
    ax.scatter(x[ood, 0], x[ood, 1], s=size * 3, marker="x", c="k", linewidths=0.6, zorder=4)
    return float(ood.mean())


def _limits(points: np.ndarray, margin: float) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    lo, hi = points.min(0) - margin, points.max(0) + margin
    half = float((hi - lo).max()) / 2
    mid = (lo + hi) / 2
    return (mid[0] - half, mid[0] + half), (mid[1] - half, mid[1] + half)


def plot_sample_clouds(result, w: float, path) -> Path:
    """Top row: the whole source extent; bottom row: zoomed on the target. Columns: source data, the target
    fine-tuning set, fine-tune only, then every guided method at ``w`` (first sampling seed)."""
    source, target = result.source, result.target
    y = result.sample_y[0].numpy()
    src_x, _ = source.sample(4000, torch.Generator().manual_seed(12345))  # only for display
    by_key = {r.key: r for r in result.runs}
    panels = [
        ("source (pre-training) data", src_x.numpy(), None),
        (f"target fine-tuning set (n={len(result.target_x)})", result.target_x.numpy(), result.target_y.numpy()),
    ]
    for key, run in by_key.items():
        if run.label == "none" or run.w == w:
            title = style(run.label)[0] + ("" if run.label == "none" else f" w={w:g}")
            panels.append((title, result.samples[key][0].numpy(), y))
    full = _limits(source.means.numpy(), 0.5)
    zoom = _limits(target.means.numpy(), 0.45)
    fig, axes = plt.subplots(2, len(panels), figsize=(3.1 * len(panels), 6.6))
    for col, (title, x, labels) in enumerate(panels):
        for row, (xlim, ylim) in enumerate((full, zoom)):
            ax = axes[row, col]
            if col == 0:
                ax.scatter(x[:, 0], x[:, 1], s=1.5, c="0.45", alpha=0.5, linewidths=0)
            elif col == 1:
                _scatter_classes(ax, x, labels, 10 if row else 5)
            else:
                rate = _scatter_samples(ax, x, labels, target, 5 if row else 2)
                if row == 0:
                    title = f"{title}\nout of domain {100 * rate:.1f}%"
            _draw_domains(ax, source, target)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(title, fontsize=9)
    axes[1, 0].set_ylabel("zoom on the target", fontsize=9)
    fig.suptitle("2D toy: samples of sampling seed 0 (colour = class; black x = out of the target's 3-sigma support, "
                 "dashed circles; grey + = source modes)", fontsize=10)
    return save_figure(fig, path)


def plot_guidance_fields(result, path) -> Path:
    """Every guided method's push per unit of (w - 1), -(eps_guided - eps_cond) / (w - 1) at plot_w, on a grid of
    x_t, one row per timestep. Arrows show the direction only (unit length); colour is the magnitude, on one scale
    per row so the methods compare directly. Modes are drawn where they sit in x_t (scaled by sqrt(alpha_bar_t))."""
    config = result.config
    ts = sorted({t for _, t in result.fields})
    labels = [label for label in guided_labels(result) if (label, ts[0]) in result.fields]
    fig, axes = plt.subplots(len(ts), len(labels), figsize=(4.2 * len(labels), 4.6 * len(ts)), squeeze=False,
                             layout="constrained")
    for row, t in enumerate(ts):
        scale = math.sqrt(result.field_alpha_bar[t])
        fields = {m: (result.fields[(m, t)][0].numpy(), result.fields[(m, t)][1].numpy()) for m in labels}
        biggest = max(float(np.linalg.norm(v, axis=1).max()) for _, v in fields.values()) or 1.0
        for col, label in enumerate(labels):
            ax = axes[row, col]
            points, push = fields[label]
            mag = np.linalg.norm(push, axis=1)
            unit = push / np.maximum(mag, 1e-12)[:, None]
            q = ax.quiver(points[:, 0], points[:, 1], unit[:, 0], unit[:, 1], mag, cmap="viridis", clim=(0, biggest),
                          angles="xy", pivot="mid", width=0.005)
            _draw_domains(ax, result.source, result.target, scale=scale, label_class=config.field_class)
            lo, hi = points.min(0), points.max(0)
            pad = 0.05 * float((hi - lo).max())
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            base = label.split("+APG")[0]
            guide = GUIDES.get(base, "") + (" (APG)" if label.endswith("+APG") else "")
            ax.set_title(f"{style(label, col)[0]}" + (f"\nguide: {guide}" if guide else "")
                         + f"\nt={t}, sqrt(alpha_bar)={scale:.2f}, mean |push| {mag.mean():.2f}", fontsize=8)
        fig.colorbar(q, ax=axes[row].tolist(), shrink=0.85, label="|eps_guided - eps_cond| / (w - 1)")
    fig.suptitle(f"Guidance direction -(eps_guided - eps_cond) at w={config.plot_w:g} for target class "
                 f"{config.field_class} (thick circle); grey + = source modes", fontsize=10)
    return save_figure(fig, path)


def _bound(entry: Dict, metric: str, side: str) -> float:
    """A leaderboard entry's mean, low or high of ``metric``; a bound it lacks (one seed) is its mean."""
    value = entry.get(f"{metric}_{side}")
    return entry[f"{metric}_mean"] if value is None else value


def plot_metrics_vs_w(result, board: List[Dict], path) -> Path:
    """Out-of-domain rate, NLL, spread and Frechet distance against w for every guided method (mean and 95%
    interval over sampling seeds; each line starts at fine-tune only, w = 1), with the exact-target reference."""
    metrics = [("ood_rate", "out-of-domain rate"), ("nll", "mean NLL under target (nats)"),
               ("spread_ratio", "spread around own mode (1 = exact)"), ("fd", "Frechet distance (2D)")]
    ref = next((e for e in board if e["variant"] == "target_exact"), None)
    unguided = next((e for e in board if e["variant"] == "none"), None)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.9 * len(metrics), 3.6))
    for ax, (key, title) in zip(axes, metrics):
        values, labels = [], guided_labels(result)
        ws = sorted({e["w"] for e in board if e["w"] is not None})
        dodge = 0.012 * ((ws[-1] - ws[0]) or 1.0)  # side by side, so the intervals do not hide each other
        for index, label in enumerate(labels):
            points = ([unguided] if unguided else []) + sorted((e for e in board if e["variant"] == label),
                                                               key=lambda e: e["w"])
            w = [e["w"] + (index - (len(labels) - 1) / 2) * dodge for e in points]
            mean, low, high = (np.array([_bound(e, key, side) for e in points]) for side in ("mean", "low", "high"))
            name, color = style(label, index)
            ax.errorbar(w, mean, yerr=[mean - low, high - mean], fmt="o", ms=3, capsize=2, color=color, label=name,
                        ls="--" if label.endswith("+APG") else "-")
            values += list(mean)
        if ref is not None:
            ax.axhline(ref[f"{key}_mean"], color="0.5", ls=":", label="exact target samples")
        ax.set_xlabel("guidance strength w")
        ax.set_title(title, fontsize=10)
        if key == "nll" and values and max(abs(v) for v in values) > 10:  # far off-support samples explode the NLL
            ax.set_yscale("symlog", linthresh=10.0)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8)
    fig.suptitle(f"mean and 95% t-interval over {result.config.seeds} sampling seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.87, 1))
    return save_figure(fig, path)
