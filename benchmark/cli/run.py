"""``dogbench run``: every stage of an experiment for every dataset, then the report."""
from __future__ import annotations

import sys

from benchmark.cli.common import quiet_third_party, results_folder
from benchmark.devices import resolve_device
from benchmark.errors import UserError
from benchmark.io import RESULTS_ROOT_HELP
from benchmark.harness.finetunes import parse_selection
from benchmark.harness.loading import load_experiment
from benchmark.harness.run import STAGE_ORDER, run_experiment


def configure(p, name: str) -> None:
    p.add_argument("--exp", default="default", help="experiment: a name in ./experiments or the package's, or a YAML "
                                                    "path (default: default)")
    p.add_argument("--datasets", default=None, help="comma-separated subset of the experiment's datasets (default: all)")
    p.add_argument("--finetunes", default=None, help="comma-separated subset of the experiment's fine-tune variants "
                                                     "(its finetunes: mapping; default: all)")
    stages = p.add_mutually_exclusive_group()
    stages.add_argument("--stages", default=None,
                        help=f"run exactly these stages, comma-separated from {','.join(STAGE_ORDER)}; an earlier "
                             f"stage's missing output is an error, not run (default: all)")
    stages.add_argument("--until", default=None, choices=STAGE_ORDER, metavar="STAGE",
                        help="run every stage up to and including STAGE")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--results-root", default=None, help=f"where <experiment>/ goes (default: {RESULTS_ROOT_HELP})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. sampling.num_samples=500")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = load_experiment(args.exp, args.overrides)
    datasets = None
    if args.datasets is not None:
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        if not datasets:  # an empty list must not silently mean every dataset
            raise UserError(f"--datasets {args.datasets!r} names no dataset; give some of "
                            f"{', '.join(exp.dataset_names())}, or leave the flag out for all of them")
        unknown = [d for d in datasets if d not in exp.dataset_names()]
        if unknown:
            raise UserError(f"--datasets {','.join(unknown)} not in experiment {exp.name} ({', '.join(exp.dataset_names())}); "
                            f"add them to its datasets or override datasets=[...]")
    finetunes = parse_selection(exp, args.finetunes)
    if args.until:
        stages = list(STAGE_ORDER[:STAGE_ORDER.index(args.until) + 1])
    else:
        stages = [s.strip() for s in (args.stages or ",".join(STAGE_ORDER)).split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad or not stages:
        raise UserError(f"unknown stage(s) {','.join(bad) or '(none)'}; choose from {','.join(STAGE_ORDER)}")
    if args.no_progress:
        quiet_third_party()
    device = str(resolve_device(args.device))
    results_folder(exp, args.results_root)  # writable before any work: a wrong --results-root loses nothing
    run_experiment(exp, datasets, stages, device, args.results_root,
                   progress=not args.no_progress and sys.stderr.isatty(), finetunes=finetunes)
    return 0
