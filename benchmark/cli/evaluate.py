"""``dogbench evaluate``: sample-quality metrics of any image set (a folder or an .npz) against a reference set (a
registered dataset or another folder / .npz), with the protocol of every number; optionally the real-data floor."""
from __future__ import annotations

from pathlib import Path

from benchmark.cli.common import output_file, progress_wanted, quiet_third_party
from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.devices import resolve_device
from benchmark.errors import UserError
from benchmark.io import DATA_ROOT_HELP, atomic_write_json
from benchmark.metrics.evaluate import (available_metrics, default_output, evaluate_samples, real_control_images,
                                        resolve_dataset)
from benchmark.metrics.features import ImageSet, ImageSource
from benchmark.metrics.settings import EvaluationSettings
from benchmark.sampling.writer import check_sample_set

BATCH_SIZE = 50  # images per forward: fits Inception and DINOv2 on a CPU or a small GPU
REAL_SEED = 0


def configure(p, name: str) -> None:
    p.description = ("Compute sample-quality metrics (FID, FD_DINOv2, PRDC; offline: fd_effnet, prdc_effnet) of a set "
                     "of images against a reference set, as pytorch-fid / dgm-eval do, and write them with their "
                     "protocol (network, weights sha256, resize, image counts) to a JSON file. A dogbench sample "
                     "folder is checked first: complete, the image count, every image's recorded sha256. Feature "
                     "networks run in fp32 (TF32 off) on every device.")
    images = "a folder of images (png, jpg, webp; searched recursively) or an .npz of uint8 (N, H, W, 3) images " \
             "(key arr_0 or images, as the ADM evaluator's batches)"
    p.add_argument("--samples", default=None, metavar="PATH",
                   help=f"the generated images: {images}; required, except for --real with --num-real "
                        f"(default: none)")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--dataset", default=None, metavar="NAME",
                     help="reference: a registered dataset, e.g. caltech101-32 (see dogbench prepare --help); this "
                          "or --reference (default: none)")
    ref.add_argument("--reference", dest="reference_path", default=None, metavar="PATH",
                     help=f"reference: {images}; this or --dataset (default: none)")
    here = ",".join(available_metrics())
    add_settings_flags(p, EvaluationSettings, exclude=("reference",),
                       defaults={"metrics": f"the ones that work here: {here}", "batch_size": BATCH_SIZE},
                       notes={"ref_split": "with --dataset"})
    p.add_argument("--real", action="store_true",
                   help="also score real images of the reference like a sample set: the real-data floor of each metric "
                        "(from the other split when --ref-split is train or test, else from the reference itself) "
                        "(default: off)")
    p.add_argument("--num-real", type=int, default=None, metavar="N",
                   help="real images for --real (default: as many as --samples holds)")
    p.add_argument("--allow-partial", action="store_true",
                   help="score an incomplete or partly corrupted dogbench sample folder's intact images; the JSON "
                        "records partial: true and the counts (default: such a folder is an error)")
    p.add_argument("--data-root", default=None, metavar="PATH",
                   help=f"dataset root for --dataset (default: {DATA_ROOT_HELP})")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for FID (default: the torch hub checkpoints folder)")
    p.add_argument("--dinov2-hub-dir", default=None, metavar="DIR",
                   help="local clone of facebookresearch/dinov2 (default: the torch hub cache, else online)")
    p.add_argument("--dinov2-weights", default=None, metavar="PATH",
                   help="dinov2_vitl14_pretrain.pth (default: the torch hub checkpoints folder)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="image decoding / resizing processes (default: 0 on cpu, min(8, cpus) on cuda)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="reference statistics cache (default: <results>/cache/reference, shared with dogbench run)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="result JSON (default: SAMPLES/metrics.json, or SAMPLES.metrics.json beside an .npz)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars, and no third-party tips or warnings (default: bars on a terminal)")
    p.set_defaults(func=run)


def samples_source(args):
    """(the images to score, what to record about them): a dogbench sample folder is checked first."""
    path = Path(args.samples).expanduser()
    check = check_sample_set(path, progress=progress_wanted(args)) if path.is_dir() else None
    if check is None:
        return path, {}
    if not check.ok and not args.allow_partial:
        raise UserError(check.error())
    if not check.paths:
        raise UserError(f"{check.describe()}: nothing to score")
    return check.paths, {"partial": not check.ok, "n_expected": check.expected, "n_intact": len(check.paths),
                         "n_missing": len(check.missing), "n_corrupted": len(check.broken)}


def run(args) -> int:
    if args.no_progress:
        quiet_third_party()
    weights = dict(inception_weights=args.inception_weights, dinov2_hub_dir=args.dinov2_hub_dir,
                   dinov2_weights=args.dinov2_weights)
    settings = settings_from_args(EvaluationSettings, args, {"metrics": available_metrics(**weights),
                                                             "batch_size": BATCH_SIZE})
    device = str(resolve_device(args.device))
    if args.num_workers is not None and args.num_workers < 0:
        raise UserError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if args.num_real is not None and (args.num_real < 1 or not args.real):
        raise UserError(f"--num-real {args.num_real}: " + ("must be 1 or more" if args.real else "needs --real"))
    if args.samples is None and not (args.real and args.num_real):
        raise UserError("pass --samples PATH (the generated images), or --real --num-real N for the real-data floor "
                        "alone")
    if args.reference_path is not None and args.ref_split not in (None, "all"):
        raise UserError(f"--ref-split {args.ref_split} needs --dataset; a --reference folder or .npz is one set")
    metrics = settings.metrics
    samples, record = samples_source(args) if args.samples else (None, {})
    n_samples = len(ImageSource(samples)) if samples is not None else 0  # a bad folder or .npz fails here, in 1 line
    out = args.out or (default_output(Path(args.samples).expanduser()) if args.samples else None)
    out = output_file(out) if out else None  # before the work: a read-only or wrong --out loses nothing
    if args.reference_path:
        reference = ImageSet(args.reference_path)
        record["reference_path"] = str(reference.path)
    else:
        reference = resolve_dataset(args.dataset, settings.ref_split, args.data_root)
    common = dict(ref_split=settings.ref_split, data_root=args.data_root, **weights, batch_size=settings.batch_size,
                  device=device, num_workers=args.num_workers, cache_dir=args.cache_dir,
                  max_images=settings.max_reference_images, progress=progress_wanted(args))
    real = None
    if args.real:
        n_real = args.num_real or n_samples
        images, drawn = real_control_images(args.dataset or reference, n_real, REAL_SEED, settings.ref_split,
                                            args.data_root)
        real = evaluate_samples(images, reference, metrics, **common)
        record["real_floor"] = {"metrics": real["metrics"], **drawn}
    if samples is not None:
        result = evaluate_samples(samples, reference, metrics, out=out, record=record, **common)
    else:
        result = {"metrics": {}, **record}
        if out is not None:
            atomic_write_json(out, result)
    print_table(result["metrics"], real["metrics"] if real else None, record)
    if out is not None:
        print(f"wrote {out}")
    return 0


def print_table(values: dict, real: dict | None, record: dict) -> None:
    names = list(dict.fromkeys([*values, *(real or {})]))
    header = f"{'metric':>18s}  {'samples':>12s}" + (f"  {'real floor':>12s}" if real else "")
    print(header)
    for name in names:
        line = f"{name:>18s}  " + (f"{values[name]:12.6g}" if name in values else f"{'-':>12s}")
        if real:
            line += f"  {real[name]:12.6g}" if name in real else f"  {'-':>12s}"
        print(line)
    if record.get("partial"):
        print(f"partial: {record['n_intact']} of {record['n_expected']} images scored (--allow-partial)")
