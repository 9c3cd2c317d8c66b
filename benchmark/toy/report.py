"""The toy experiment's outputs, all written atomically: the leaderboard (leaderboard.csv / leaderboard.md: per method
and parameters, each metric's mean and 95% Student-t interval over the sampling seeds), metrics.json / metrics.csv
(every metric per run and seed), samples.npz and the figures."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import stats

from benchmark.io import atomic_open, atomic_write_json, atomic_write_text
from benchmark.toy.experiment import ToyResult
from benchmark.toy.plots import plot_guidance_fields, plot_metrics_vs_w, plot_sample_clouds

METRICS = ("ood_rate", "off_class_rate", "nll", "nll_median", "spread_ratio", "fd")
CONFIDENCE = 0.95
ROW_COLUMNS = ("method", "variant", "params", "w", "seed") + METRICS
# the leaderboard's table: (metric, heading, scale, decimals)
SHOWN = (("ood_rate", "OOD %", 100, 1), ("off_class_rate", "off-class %", 100, 1), ("nll", "NLL", 1, 2),
         ("spread_ratio", "spread", 1, 2), ("fd", "FD", 1, 4))


def t_interval(values: List[float]) -> Tuple[float, Optional[float], Optional[float]]:
    """Mean and the two-sided 95% Student-t interval of the mean (None without two values to spread)."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def leaderboard(rows: List[dict]) -> List[dict]:
    """One row per (variant, w) in run order: method, parameters, each metric's mean / low / high over its seeds,
    n_seeds."""
    groups: Dict[Tuple[str, Optional[float]], List[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["w"]), []).append(row)
    board = []
    for members in groups.values():
        first = members[0]
        entry = {k: v for k, v in first.items() if k not in METRICS and k != "seed"}
        for metric in METRICS:
            values = [r[metric] for r in members if r.get(metric) is not None]
            if values:
                entry[f"{metric}_mean"], entry[f"{metric}_low"], entry[f"{metric}_high"] = t_interval(values)
        entry["n_seeds"] = len(members)
        board.append(entry)
    return board


def _csv(rows: List[dict], first: Tuple[str, ...]) -> str:
    columns = list(first) + sorted({k for r in rows for k in r} - set(first))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def board_columns() -> Tuple[str, ...]:
    return ("method", "params", "variant", "w") + tuple(f"{m}_{s}" for m in METRICS for s in ("mean", "low", "high")) \
        + ("n_seeds",)


def _cell(entry: dict, metric: str, scale: float, decimals: int) -> str:
    mean, low, high = (entry.get(f"{metric}_{s}") for s in ("mean", "low", "high"))
    if mean is None:
        return ""
    text = f"{scale * mean:.{decimals}f}"
    return text if low is None else f"{text} [{scale * low:.{decimals}f}, {scale * high:.{decimals}f}]"


def board_markdown(board: List[dict], config) -> str:
    lines = [f"# 2D toy leaderboard: mean [95% t-interval] over {config.seeds} sampling seeds, {config.num_samples} "
             f"samples each", "",
             "| method | params | " + " | ".join(h for _, h, _, _ in SHOWN) + " | n_seeds |",
             "|---|---|" + "---:|" * (len(SHOWN) + 1)]
    for e in board:
        cells = [_cell(e, metric, scale, decimals) for metric, _, scale, decimals in SHOWN]
        lines.append(f"| {e['method']} | {e['params']} | " + " | ".join(cells) + f" | {e['n_seeds']} |")
    return "\n".join(lines) + "\n"


def format_table(board: List[dict]) -> str:
    """The leaderboard for a terminal: means, and the interval's half width after +-."""
    lines = [f"{'method':<14}{'params':<30}" + "".join(f"{h:>16}" for _, h, _, _ in SHOWN) + f"{'n':>4}"]
    for e in board:
        cells = []
        for metric, _, scale, decimals in SHOWN:
            mean, low, high = (e.get(f"{metric}_{s}") for s in ("mean", "low", "high"))
            text = "" if mean is None else f"{scale * mean:.{decimals}f}"
            if low is not None:
                text += f" +-{scale * (high - low) / 2:.{decimals}f}"
            cells.append(f"{text:>16}")
        lines.append(f"{e['method']:<14}{e['params']:<30}" + "".join(cells) + f"{e['n_seeds']:>4}")
    return "\n".join(lines)


def write_outputs(result: ToyResult, out: Path) -> List[Path]:
    """leaderboard.csv / .md, metrics.json / metrics.csv, samples.npz, and three PNGs; all atomic."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    board = leaderboard(result.rows)
    atomic_write_json(out / "metrics.json", {
        "config": cfg.to_dict(), "interval": f"{CONFIDENCE:.0%} Student-t interval of the mean over sampling seeds",
        "leaderboard": board, "rows": result.rows, "timings_s": result.timings,
        "runs": [{"key": r.key, "label": r.label, "w": r.w, "method": r.spec.to_dict()} for r in result.runs],
        "target": {"means": result.target.means.tolist(), "stds": result.target.stds.tolist()},
        "source": {"num_modes": result.source.num_classes, "std": float(result.source.stds[0])},
    })
    atomic_write_text(out / "metrics.csv", _csv(result.rows, ROW_COLUMNS))
    atomic_write_text(out / "leaderboard.csv", _csv(board, board_columns()))
    atomic_write_text(out / "leaderboard.md", board_markdown(board, cfg))
    with atomic_open(out / "samples.npz", "wb") as f:
        np.savez_compressed(f, labels=result.sample_y.numpy(), target_x=result.target_x.numpy(),
                            target_y=result.target_y.numpy(), **{k: x.numpy() for k, x in result.samples.items()})
    return [
        out / "leaderboard.csv", out / "leaderboard.md", out / "metrics.json", out / "metrics.csv", out / "samples.npz",
        plot_sample_clouds(result, cfg.plot_w, out / "samples.png"),
        plot_guidance_fields(result, out / "guidance_field.png"),
        plot_metrics_vs_w(result, board, out / "metrics_vs_w.png"),
    ]
