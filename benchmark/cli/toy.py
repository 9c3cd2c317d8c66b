"""``dogbench toy``: the paper's 2D experiment, its metrics and figures (default ``results/toy/``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.io import results_root
from benchmark.toy.experiment import run_toy
from benchmark.toy.report import format_table, leaderboard, write_outputs
from benchmark.toy.settings import ToyConfig


def configure(p, name: str) -> None:
    p.description = ("Pre-train a small MLP denoiser on a many-mode 2D Gaussian mixture, fine-tune it on a small "
                     "shifted sub-domain, then compare every built-in guidance method (fine-tune only, CFG, DoG, "
                     "CFG+DoG, autoguidance, ICG, APG variants) over guidance strengths and sampling seeds with exact "
                     "metrics against the known target density; writes a leaderboard with 95%% t-intervals.")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <results>/toy)")
    add_settings_flags(p, ToyConfig)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    config = settings_from_args(ToyConfig, args)
    out = args.out if args.out is not None else results_root() / "toy"
    start = time.perf_counter()
    result = run_toy(config, progress=not args.no_progress)
    paths = write_outputs(result, out)
    print(format_table(leaderboard(result.rows)))
    t = result.timings
    print(f"pre-train {t['pretrain_s']:.0f}s, fine-tune {t['finetune_s']:.0f}s, sample {t['sample_s']:.0f}s, "
          f"total {time.perf_counter() - start:.0f}s", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
