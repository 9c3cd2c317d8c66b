"""``dogbench evaluate``: metrics of a folder of generated images against a dataset's reference statistics."""
from __future__ import annotations

from pathlib import Path

from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.metrics.evaluate import DEFAULT_METRICS, evaluate_samples
from benchmark.metrics.reference import MAX_IMAGES
from benchmark.metrics.settings import EvaluationSettings


def configure(p, name: str) -> None:
    p.description = ("Compute sample-quality metrics of a directory of generated PNGs against a dataset's cached "
                     "reference statistics; writes metrics.json (values + protocol) into the samples directory.")
    p.add_argument("--samples", required=True, metavar="DIR", help="directory of generated *.png (searched recursively)")
    p.add_argument("--dataset", required=True, metavar="NAME", help="reference dataset registry name, e.g. caltech101-32")
    add_settings_flags(p, EvaluationSettings, defaults={"metrics": list(DEFAULT_METRICS), "batch_size": 50})
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help="dataset root (default: $DOGBENCH_DATA, else ../shared/data, else ./data)")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for FID (default: the torch hub checkpoints dir)")
    p.add_argument("--dinov2-hub-dir", default=None, metavar="DIR",
                   help="local clone of facebookresearch/dinov2 (default: the torch hub cache, else online)")
    p.add_argument("--dinov2-weights", default=None, metavar="PATH",
                   help="dinov2_vitl14_pretrain.pth (default: the torch hub checkpoints dir)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="image decoding/resizing worker processes (default: 0 on cpu, min(8, cpus) on gpu)")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES, metavar="N",
                   help=f"use at most N samples and N reference images, a seeded subset, as dgm-eval's --nsample "
                        f"(default: {MAX_IMAGES})")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="reference statistics cache (default: <results>/cache/reference, shared with dogbench run)")
    p.add_argument("--out", default=None, metavar="PATH", help="result json (default: SAMPLES/metrics.json)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = settings_from_args(EvaluationSettings, args, {"metrics": list(DEFAULT_METRICS), "batch_size": 50})
    result = evaluate_samples(
        args.samples, args.dataset, settings.metrics, ref_split=settings.ref_split, data_root=args.data_root,
        inception_weights=args.inception_weights, dinov2_hub_dir=args.dinov2_hub_dir,
        dinov2_weights=args.dinov2_weights, batch_size=settings.batch_size, device=args.device,
        num_workers=args.num_workers, cache_dir=args.cache_dir, max_images=args.max_images, out=args.out,
        progress=not args.no_progress)
    for name, value in result["metrics"].items():
        print(f"{name:>18s}  {value:.6g}")
    print(f"wrote {Path(args.out) if args.out else Path(args.samples) / 'metrics.json'}")
    return 0
