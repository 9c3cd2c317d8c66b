"""``dogbench sweep``: an Optuna search over w for one dataset and method, in the study's own results folder."""
from __future__ import annotations

from benchmark.cli.common import quiet_third_party, results_folder
from benchmark.devices import resolve_device
from benchmark.errors import UserError
from benchmark.io import RESULTS_ROOT_HELP
from benchmark.harness.finetunes import one_finetune
from benchmark.harness.loading import load_experiment
from benchmark.harness.storage import check_storage_url
from benchmark.harness.sweep import run_sweep, study_dir


def configure(p, name: str) -> None:
    p.add_argument("--exp", default="default", help="experiment name or YAML path (default: default)")
    p.add_argument("--dataset", required=True, help="one of the experiment's datasets")
    p.add_argument("--method", default="dog", help="the experiment's method (its label) whose parameters are searched: "
                                                   "w, or the parameters of its grid (default: dog)")
    p.add_argument("--metric", default=None, help="objective column (default: evaluation.select_by)")
    trials = p.add_mutually_exclusive_group()
    trials.add_argument("--trials", type=int, default=None, help="run this many more trials (as Optuna's n_trials)")
    trials.add_argument("--total-trials", type=int, default=None,
                        help="run until the study holds this many finished trials (default: sweep.trials)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sweep.storage, else SQLite in results/)")
    p.add_argument("--prune-margin", type=float, default=0.05,
                   help="relative margin before a low-fidelity trial is pruned (default: 0.05)")
    p.add_argument("--worker", type=int, default=0, help="index of this worker when several share the storage; "
                                                         "varies the sampler seed (default: 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--results-root", default=None, help=f"where <experiment>/ goes (default: {RESULTS_ROOT_HELP})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = one_finetune(load_experiment(args.exp, args.overrides), "dogbench sweep")
    if args.dataset not in exp.dataset_names():
        raise UserError(f"--dataset {args.dataset} is not in experiment {exp.name} ({', '.join(exp.dataset_names())})")
    for flag in ("trials", "total_trials"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.storage:
        check_storage_url(args.storage)
    results_folder(exp, args.results_root)  # writable before any work
    if args.no_progress:
        quiet_third_party()
    metric = args.metric or exp.evaluation.select_by
    summary = run_sweep(exp, args.dataset, args.method, metric, args.trials, args.total_trials, args.storage,
                        str(resolve_device(args.device)), args.results_root, progress=not args.no_progress,
                        prune_margin=args.prune_margin, worker=args.worker)
    if summary.get("leaderboard"):
        print(f"\nstudy leaderboard ({study_dir(exp, args.dataset, args.method, metric, args.results_root)}):\n\n"
              f"{summary['leaderboard']}")
    return 0
