"""``dogbench sweep``: an Optuna search over w for one dataset and method."""
from __future__ import annotations

from benchmark.devices import resolve_device
from benchmark.errors import UserError
from benchmark.harness.loading import load_experiment
from benchmark.harness.run import report
from benchmark.harness.storage import check_storage_url
from benchmark.harness.sweep import SWEEP_METHODS, run_sweep
from benchmark.harness.wandb_log import make_tracker


def configure(p, name: str) -> None:
    p.add_argument("--exp", default="default", help="experiment name or YAML path (default: default)")
    p.add_argument("--dataset", required=True, help="one of the experiment's datasets")
    p.add_argument("--method", choices=SWEEP_METHODS, default="dog", help="guidance method whose w is searched (default: dog)")
    p.add_argument("--metric", default=None, help="objective column (default: evaluation.select_by)")
    p.add_argument("--trials", type=int, default=None, help="finished+pruned trials of the study (default: sweep.trials)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sweep.storage, else SQLite in results/)")
    p.add_argument("--prune-margin", type=float, default=0.05,
                   help="relative margin before a low-fidelity trial is pruned (default: 0.05)")
    p.add_argument("--worker", type=int, default=0, help="index of this worker when several share the storage; "
                                                         "varies the sampler seed (default: 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--results-root", default=None, help="where <experiment>/ goes (default: $DOGBENCH_RESULTS, else results/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=run)


def run(args) -> int:
    exp = load_experiment(args.exp, args.overrides)
    if args.dataset not in exp.datasets:
        raise UserError(f"--dataset {args.dataset} is not in experiment {exp.name} ({', '.join(exp.datasets)})")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be positive, got {args.trials}")
    if args.storage:
        check_storage_url(args.storage)
    metric = args.metric or exp.evaluation.select_by
    run_sweep(exp, args.dataset, args.method, metric, args.trials, args.storage, str(resolve_device(args.device)),
              args.results_root, prune_margin=args.prune_margin, worker=args.worker)
    with make_tracker(exp, args.results_root) as tracker:
        markdown = report(exp, exp.results_dir(args.results_root), [], tracker)
    if markdown:
        print(markdown)
    return 0
