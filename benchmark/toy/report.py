"""The toy experiment's outputs: metrics.json / metrics.csv (every metric per method and w), samples.npz and the
figures, all written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import List

import numpy as np

from benchmark.io import atomic_open, atomic_write_json, atomic_write_text
from benchmark.toy.experiment import ToyResult
from benchmark.toy.plots import plot_guidance_fields, plot_metrics_vs_w, plot_sample_clouds

METRIC_COLUMNS = ("method", "w", "ood_rate", "off_class_rate", "nll", "nll_median", "spread_ratio", "fd")


def rows_to_csv(rows: List[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    return buf.getvalue()


def write_outputs(result: ToyResult, out: Path) -> List[Path]:
    """metrics.json / metrics.csv (every metric per method and w), samples.npz, and three PNGs; all atomic."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    by = {(r["method"], r["w"]): r for r in result.rows}
    summary = {
        f"{key}_at_w{w:g}": {"cfg": by[("cfg", w)][key], "dog": by[("dog", w)][key]}
        for w in cfg.w_grid for key in ("ood_rate", "nll", "spread_ratio", "fd")
    }
    atomic_write_json(out / "metrics.json", {
        "config": cfg.to_dict(), "rows": result.rows, "summary": summary,
        "timings_s": result.timings,
        "target": {"means": result.target.means.tolist(), "stds": result.target.stds.tolist()},
        "source": {"num_modes": result.source.num_classes, "std": float(result.source.stds[0])},
    })
    atomic_write_text(out / "metrics.csv", rows_to_csv(result.rows))
    arrays = {f"{m}_w{w:g}": x.numpy() for (m, w), x in result.samples.items()}
    with atomic_open(out / "samples.npz", "wb") as f:
        np.savez_compressed(f, labels=result.sample_y.numpy(), target_x=result.target_x.numpy(),
                            target_y=result.target_y.numpy(), **arrays)
    return [
        out / "metrics.json", out / "metrics.csv", out / "samples.npz",
        plot_sample_clouds(result, cfg.plot_w, out / "samples.png"),
        plot_guidance_fields(result, out / "guidance_field.png"),
        plot_metrics_vs_w(result.rows, out / "metrics_vs_w.png"),
    ]


def format_table(rows: List[dict]) -> str:
    lines = [f"{'method':<17}{'w':>5}{'OOD %':>8}{'off-class %':>12}{'NLL':>10}{'NLL med':>9}{'spread':>8}{'FD':>9}"]
    for r in rows:
        w = "" if r["w"] is None else f"{r['w']:g}"
        lines.append(f"{r['method']:<17}{w:>5}{100 * r['ood_rate']:>8.1f}{100 * r['off_class_rate']:>12.1f}{r['nll']:>10.3f}"
                     f"{r['nll_median']:>9.3f}{r['spread_ratio']:>8.2f}{r['fd']:>9.4f}")
    return "\n".join(lines)
