"""``dogbench toy``: run the 2D toy experiment and write its metrics and figures (default ``results/toy/``)."""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import List, Tuple

import numpy as np

from benchmark.io import atomic_open, atomic_write_json, atomic_write_text, results_root

from .experiment import DEFAULT_W_GRID, ToyConfig, ToyResult, config_dict, run_toy

METRIC_COLUMNS = ("method", "w", "ood_rate", "off_class_rate", "nll", "nll_median", "spread_ratio", "fd")


def parse_w_grid(text: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--w-grid {text!r} must be comma-separated numbers, e.g. 1,1.5,2,3,4") from None


def parse_ints(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 50,200") from None


def add_command(subparsers) -> None:
    d = ToyConfig()
    p = subparsers.add_parser(
        "toy", help="2D toy: CFG vs DoG on a shifted few-mode target (CPU, ~1-2 min)",
        description="Pre-train a small MLP denoiser on a many-mode 2D Gaussian mixture, fine-tune it on a small shifted "
                    "sub-domain, then compare fine-tune only, CFG and DoG over guidance scales with exact metrics "
                    "against the known target density.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=None, help="output folder [default: results/toy under $DOGBENCH_RESULTS or ./results]")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data, both trainings and the sampler noise")
    p.add_argument("--w-grid", type=parse_w_grid, default=DEFAULT_W_GRID, help="guidance scales w, comma-separated (w=1: unguided)")
    p.add_argument("--plot-w", type=float, default=d.plot_w, help="guidance scale shown in samples.png (must be in --w-grid)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="samples per (method, w)")
    p.add_argument("--target-points", type=int, default=d.target_points, help="size of the target fine-tuning set (points)")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps, help="pre-training optimiser steps on the source")
    p.add_argument("--finetune-steps", type=int, default=d.finetune_steps, help="fine-tuning optimiser steps on the target")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size (points)")
    p.add_argument("--pretrain-lr", type=float, default=d.pretrain_lr, help="peak AdamW learning rate of pre-training (cosine decay)")
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr, help="peak AdamW learning rate of fine-tuning (cosine decay)")
    p.add_argument("--label-dropout", type=float, default=d.label_dropout, help="probability of replacing a label by null in training")
    p.add_argument("--hidden", type=int, default=d.hidden, help="MLP width (features)")
    p.add_argument("--depth", type=int, default=d.depth, help="number of residual MLP blocks")
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="DDPM sampling steps (respaced from 1000)")
    p.add_argument("--sampler-variance", choices=("small", "large"), default=d.sampler_variance,
                   help="DDPM step variance: posterior (small) or beta_t (large, DiT's fixed-variance default)")
    p.add_argument("--field-t", type=parse_ints, default=d.field_ts, help="timesteps (0..999, training scale, comma-separated) "
                                                                           "of the guidance-field figure, one row each")
    p.add_argument("--field-class", type=int, default=d.field_class, help="target class whose guidance field is drawn")
    p.add_argument("--copy-null-row", action="store_true", help="start the fine-tuned null label row from the pre-trained one "
                                                                  "instead of a fresh table")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (the toy MLP is fastest on 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=main)


def config_from_args(args) -> ToyConfig:
    return ToyConfig(
        seed=args.seed, target_points=args.target_points, pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps, batch_size=args.batch_size, pretrain_lr=args.pretrain_lr,
        finetune_lr=args.finetune_lr, label_dropout=args.label_dropout, hidden=args.hidden, depth=args.depth,
        sample_steps=args.sample_steps, sampler_variance=args.sampler_variance, num_samples=args.num_samples, w_grid=tuple(args.w_grid), plot_w=args.plot_w,
        field_ts=tuple(args.field_t), field_class=args.field_class, copy_null_row=args.copy_null_row, threads=args.threads,
    ).validate()


def rows_to_csv(rows: List[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    return buf.getvalue()


def write_outputs(result: ToyResult, out: Path) -> List[Path]:
    """metrics.json / metrics.csv (every metric per method and w), samples.npz, and three PNGs; all atomic."""
    from .plots import plot_guidance_fields, plot_metrics_vs_w, plot_sample_clouds

    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    by = {(r["method"], r["w"]): r for r in result.rows}
    summary = {
        f"{key}_at_w{w:g}": {"cfg": by[("cfg", w)][key], "dog": by[("dog", w)][key]}
        for w in cfg.w_grid for key in ("ood_rate", "nll", "spread_ratio", "fd")
    }
    atomic_write_json(out / "metrics.json", {
        "config": config_dict(cfg), "rows": result.rows, "summary": summary,
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


def main(args) -> int:
    config = config_from_args(args)
    out = args.out if args.out is not None else results_root() / "toy"
    result = run_toy(config, progress=not args.no_progress)
    paths = write_outputs(result, out)
    print(format_table(result.rows))
    t = result.timings
    print(f"pre-train {t['pretrain_s']:.0f}s, fine-tune {t['finetune_s']:.0f}s, sample {t['sample_s']:.0f}s", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
