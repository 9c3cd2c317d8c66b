"""``dogbench evaluate``: the metric card of any image set (a folder or an .npz) against a reference set (a
registered dataset, an experiment's own dataset, or another folder / .npz), each number with its bootstrap interval
and the protocol behind it; optionally the real-data floor."""
from __future__ import annotations

import sys
from pathlib import Path

from benchmark.cli.common import output_file, progress_wanted, quiet_third_party
from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.devices import resolve_device
from benchmark.errors import UserError, did_you_mean
from benchmark.io import DATA_ROOT_HELP, atomic_write_json
from benchmark.metrics.evaluate import (available_metrics, default_output, evaluate_samples, real_control_images,
                                        resolve_dataset)
from benchmark.metrics.features import ImageSet, ImageSource, load_npz_labels, size_counts
from benchmark.metrics.intervals import LEVEL, RESAMPLES
from benchmark.metrics.memorization import SPLITS_TEXT
from benchmark.metrics.realsets import real_sets
from benchmark.metrics.registry import COLUMNS, METRICS
from benchmark.metrics.settings import EvaluationSettings
from benchmark.sampling.writer import check_sample_set

BATCH_SIZE = 50  # images per forward: fits Inception and DINOv2 on a CPU or a small GPU
REAL_SEED = 0
IMAGES = "a folder of images (png, jpg, webp; searched recursively) or an .npz of uint8 (N, H, W, 3) images " \
         "(key arr_0 or images, as the ADM evaluator's batches; class labels under labels or arr_1)"


def configure(p, name: str) -> None:
    p.description = ("Compute the metric card (FID, FD_DINOv2, PRDC, KID, class KID, Vendi, copy rate, CMMD; offline: "
                     "their EfficientNet-Lite0 twins) of a set of images against a reference set, each number with "
                     "its bootstrap interval, and write them with their protocol (network, weights sha256, resize, "
                     "image counts) to a JSON file. A dogbench sample folder is checked first: complete, the image "
                     "count, every image's recorded sha256. Feature networks run in fp32 (TF32 off) on every device.")
    p.add_argument("--samples", default=None, metavar="PATH",
                   help=f"the generated images: {IMAGES}; required, except for --real with --num-real (default: none)")
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--dataset", default=None, metavar="NAME",
                     help="reference: a registered dataset, e.g. caltech101-32 (see dogbench prepare --help), or with "
                          "--exp one of the experiment's own datasets; this or --reference (default: none)")
    ref.add_argument("--reference", dest="reference_path", default=None, metavar="PATH",
                     help=f"reference: {IMAGES}; this or --dataset (default: none)")
    p.add_argument("--exp", default=None, metavar="NAME",
                   help="take the datasets (your own included), data root, feature weights, evaluation settings and "
                        "fine-tuning split of this experiment (a name in ./experiments or the package's, or a YAML "
                        "path); flags still override them (default: none)")
    here = ",".join(available_metrics())
    add_settings_flags(p, EvaluationSettings, exclude=("reference",),
                       defaults={"metrics": f"the ones that work here with these inputs (of {here})",
                                 "batch_size": BATCH_SIZE},
                       notes={"ref_split": "with --dataset"})
    p.add_argument("--train", default=None, metavar="PATH",
                   help=f"the images the model was fine-tuned on, for the copy rate: {IMAGES} (default: with "
                        f"--dataset, its train split, or the experiment's finetune.split with --exp)")
    p.add_argument("--held-out", default=None, metavar="PATH",
                   help="real images of the target the model was NOT fine-tuned on, the copy rate's yardstick "
                        "(default: with --dataset, its test split; with --reference, the reference)")
    p.add_argument("--bootstrap", type=int, default=RESAMPLES, metavar="N",
                   help=f"bootstrap resamples behind each interval; 0: no intervals (default: {RESAMPLES})")
    p.add_argument("--level", type=float, default=LEVEL, help=f"confidence level of the intervals (default: {LEVEL})")
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
                   help=f"dataset root for --dataset (default: the experiment's with --exp, else {DATA_ROOT_HELP})")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth for FID (default: the torch hub checkpoints folder)")
    p.add_argument("--dinov2-hub-dir", default=None, metavar="DIR",
                   help="local clone of facebookresearch/dinov2 (default: the torch hub cache, else online)")
    p.add_argument("--dinov2-weights", default=None, metavar="PATH",
                   help="dinov2_vitl14_pretrain.pth (default: the torch hub checkpoints folder)")
    p.add_argument("--clip-weights", default=None, metavar="DIR",
                   help="a folder with config.json and model.safetensors (or pytorch_model.bin) of "
                        "openai/clip-vit-large-patch14-336, for "
                        "CMMD (default: the Hugging Face cache)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="image decoding / resizing processes (default: 0 on cpu, min(8, cpus) on cuda)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="reference statistics and split features cache (default: <results>/cache/reference, shared "
                        "with dogbench run)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="result JSON (default: SAMPLES/metrics.json, or SAMPLES.metrics.json beside an .npz)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars, and no third-party tips or warnings (default: bars on a terminal)")
    p.set_defaults(func=run)


def samples_source(args):
    """(the images to score, what to record about them, their labels or None): a dogbench sample folder is checked
    first; an .npz may carry labels."""
    path = Path(args.samples).expanduser()
    check = check_sample_set(path, progress=progress_wanted(args)) if path.is_dir() else None
    if check is None:
        return path, {}, load_npz_labels(path) if path.is_file() else None
    if not check.ok and not args.allow_partial:
        raise UserError(check.error())
    if not check.paths:
        raise UserError(f"{check.describe()}: nothing to score")
    labels = check.labels if (check.labels >= 0).all() else None
    return check.paths, {"partial": not check.ok, "n_expected": check.expected, "n_intact": len(check.paths),
                         "n_missing": len(check.missing), "n_corrupted": len(check.broken)}, labels


def note_sizes(source: ImageSource, flag: str, record: dict) -> None:
    """A folder of images of several sizes is scored (each image is resized to the network's input on its own),
    with a note on stderr and in the JSON, never silently."""
    counts = size_counts(source)
    if len(counts) > 1:
        listed = ", ".join(f"{size}: {n}" for size, n in sorted(counts.items(), key=lambda kv: -kv[1])[:4])
        print(f"dogbench evaluate: note: {flag} holds images of {len(counts)} sizes ({listed}); each is resized "
              f"straight to the network's input (no crop), so differently shaped images are squashed differently; "
              f"resize them to one size first if that is not what you meant", file=sys.stderr)
        record.setdefault("mixed_sizes", {})[flag] = counts


def experiment_inputs(args):
    """(reference dataset, data root, weights, evaluation base, train split) from --exp, or the flags alone."""
    weights = dict(inception_weights=args.inception_weights, dinov2_hub_dir=args.dinov2_hub_dir,
                   dinov2_weights=args.dinov2_weights, clip_weights=args.clip_weights)
    if not args.exp:
        return args.dataset, args.data_root, weights, {}, "train"
    from benchmark.harness.loading import load_experiment  # the harness only for --exp
    exp = load_experiment(args.exp, check_storage=False)
    dataset = args.dataset
    if dataset is not None:
        if dataset not in exp.dataset_names():
            raise UserError(f"--dataset {dataset} is not a dataset of experiment {exp.name}"
                            f"{did_you_mean(dataset, exp.dataset_names())}; choose one of "
                            f"{', '.join(exp.dataset_names())}")
        dataset = exp.dataset(dataset)
    for key, value in exp.weight_paths().items():
        weights[key] = weights.get(key) or value
    e = exp.evaluation
    base = {"metrics": list(e.metrics), "ref_split": e.ref_split, "max_reference_images": e.max_reference_images,
            "batch_size": e.batch_size}
    return dataset, args.data_root or exp.data_dir(), weights, base, exp.finetune.split


def default_metrics(weights: dict, works) -> list[str]:
    """The card that works here with these inputs: every metric whose network is found, except those whose real
    images or labels are missing (``works(metric)`` says)."""
    return [m for m in available_metrics(**weights) if works(m)]


def run(args) -> int:
    if args.no_progress:
        quiet_third_party()
    dataset, data_root, weights, base, train_split = experiment_inputs(args)
    typed = settings_from_args(EvaluationSettings, args, {"batch_size": BATCH_SIZE, "metrics": ["fd_effnet"], **base})
    if args.reference_path is not None and args.ref_split not in (None, "all"):
        raise UserError(f"--ref-split {args.ref_split} needs --dataset; a --reference folder or .npz is one set")
    samples, record, labels = samples_source(args) if args.samples else (None, {}, None)
    if samples is not None:
        source = ImageSource(samples)  # a bad folder or .npz fails here, in one line
        note_sizes(source, "--samples", record)
    if args.reference_path:
        reference = ImageSet(args.reference_path)
        note_sizes(reference.source, "--reference", record)
        record["reference_path"] = str(reference.path)
    else:
        reference = resolve_dataset(dataset, args.ref_split or base.get("ref_split", "all"), data_root)
    against = dataset if dataset is not None else reference  # a name or spec: its splits are known
    train, held_out = (ImageSet(path, flag) if path else None
                       for path, flag in ((args.train, "--train"), (args.held_out, "--held-out")))

    def works(metric: str) -> bool:  # its real images (and labels) are there
        if METRICS[metric].kind == "class_kid" and labels is None:
            return False
        try:
            real_sets([metric], against, reference, data_root=data_root, ref_split=reference.split,
                      train_split=train_split, train=train, held_out=held_out)
        except UserError:
            return False
        return True

    chosen = args.metrics is not None or "metrics" in base  # else: the card that works here
    settings = typed if chosen else typed.replaced(metrics=default_metrics(weights, works))
    device = str(resolve_device(args.device))
    if args.num_workers is not None and args.num_workers < 0:
        raise UserError(f"--num-workers must be 0 or more, got {args.num_workers}")
    if args.num_real is not None and (args.num_real < 1 or not args.real):
        raise UserError(f"--num-real {args.num_real}: " + ("must be 1 or more" if args.real else "needs --real"))
    if args.bootstrap < 0 or not 0 < args.level < 1:
        raise UserError(f"--bootstrap {args.bootstrap} --level {args.level}: the resamples must be 0 (no intervals) or "
                        f"more, the level strictly between 0 and 1 (e.g. --bootstrap {RESAMPLES} --level {LEVEL})")
    if args.samples is None and not (args.real and args.num_real):
        raise UserError("pass --samples PATH (the generated images), or --real --num-real N for the real-data floor "
                        "alone")
    metrics = settings.metrics
    if labels is None and any(METRICS[m].kind == "class_kid" for m in metrics) and samples is not None:
        raise UserError(f"{next(m for m in metrics if METRICS[m].kind == 'class_kid')} needs each sample's class: "
                        f"score a dogbench sample folder, or an .npz with a labels array (or arr_1)")
    n_samples = len(source) if samples is not None else 0
    out = args.out or (default_output(Path(args.samples).expanduser()) if args.samples else None)
    out = output_file(out) if out else None  # before the work: a read-only or wrong --out loses nothing
    if any(METRICS[m].kind == "copy" for m in metrics):
        record["copy_rate_splits"] = SPLITS_TEXT
    common = dict(ref_split=settings.ref_split, data_root=data_root, **weights, batch_size=settings.batch_size,
                  device=device, num_workers=args.num_workers, cache_dir=args.cache_dir,
                  max_images=settings.max_reference_images, progress=progress_wanted(args), train_split=train_split,
                  train=train, held_out=held_out, card=True)
    real = None
    if args.real:
        n_real = args.num_real or n_samples
        images, drawn = real_control_images(against, n_real, REAL_SEED, settings.ref_split, data_root)
        real = evaluate_samples(images, against, metrics, **common)
        record["real_floor"] = {"metrics": real["metrics"], **intervals_of(real, args), **drawn}
    if samples is not None:
        result = evaluate_samples(samples, against, metrics, out=out, record=record, labels=labels, **common)
        result.update(intervals_of(result, args))
        if out is not None:
            atomic_write_json(out, {k: v for k, v in result.items() if k != "card"})
    else:
        result = {"metrics": {}, **record}
        if out is not None:
            atomic_write_json(out, result)
    print_table(result, real, record)
    if out is not None:
        print(f"wrote {out}")
    return 0


def intervals_of(result: dict, args) -> dict:
    """{"intervals": {column: {low, high, level, resamples}}} from the result's card (none with --bootstrap 0)."""
    if not args.bootstrap:
        return {}
    found = result["card"].intervals(args.bootstrap, args.level)
    return {"intervals": {c: {"low": i.low, "high": i.high, "level": i.level, "resamples": i.resamples}
                          for c, i in found.items()}}


def _cell(values: dict, intervals: dict, name: str) -> str:
    if name not in values:
        return "-"
    digits = COLUMNS[name].digits if name in COLUMNS else 4
    text = f"{values[name]:.{digits}f}"
    if name in intervals:
        text += f" [{intervals[name]['low']:.{digits}f}, {intervals[name]['high']:.{digits}f}]"
    return text


def print_table(result: dict, real: dict | None, record: dict) -> None:
    values, intervals = result["metrics"], result.get("intervals", {})
    real_values, real_intervals = (real["metrics"], record["real_floor"].get("intervals", {})) if real else ({}, {})
    names = list(dict.fromkeys([*values, *real_values]))
    rows = [(name, _cell(values, intervals, name), _cell(real_values, real_intervals, name)) for name in names]
    width = max([len(r[1]) for r in rows] + [12])
    print(f"{'metric':>18s}  {'samples':>{width}s}" + (f"  {'real floor':>{width}s}" if real else ""))
    for name, cell, real_cell in rows:
        print(f"{name:>18s}  {cell:>{width}s}" + (f"  {real_cell:>{width}s}" if real else ""))
    if intervals or real_intervals:
        some = next(iter({**intervals, **real_intervals}.values()))
        print(f"[low, high]: {some['level']:.0%} bootstrap interval over the samples ({some['resamples']} resamples, "
              f"real images held fixed)")
    if record.get("partial"):
        print(f"partial: {record['n_intact']} of {record['n_expected']} images scored (--allow-partial)")
