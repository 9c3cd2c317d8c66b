"""``dogbench prepare`` (check, fetch or explain a dataset) and ``dogbench latents`` (the VAE latent cache)."""
from __future__ import annotations

from pathlib import Path

from benchmark.data import DATASETS, get_dataset, get_spec
from benchmark.data.latents import DTYPES, build_latent_cache, is_pixel_space
from benchmark.data.prepare import download, placement_instructions, verify
from benchmark.data.registry import PACKAGED_DATA
from benchmark.errors import UserError, did_you_mean
from benchmark.io import DATA_ROOT_HELP, data_root
from benchmark.models import DEFAULT_VAE, load_autoencoder
from benchmark.models.autoencoder import VAE_NAMES


def configure(p, name: str) -> None:
    if name == "prepare":
        p.description = ("Without --download: check the dataset found under --root (images per split against the "
                         "official counts, classes, missing files) or, if it is not there, print what to place where. "
                         "With --download: first fetch and unpack the official archives (needs internet).")
        p.add_argument("dataset", metavar="DATASET", nargs="?", default=None,
                       help=f"registry name ({', '.join(DATASETS)}) or, with --exp, one of the experiment's datasets "
                            f"(default with --exp: all of them)")
        p.add_argument("--exp", default=None, help="check the datasets of this experiment (a name in ./experiments "
                                                   "or the package's, or a YAML path), your own included")
        p.add_argument("--root", "--data-root", dest="root", type=str, default=None,
                       help="the dataset's folder, or a data root holding it (default: the experiment's data_root, "
                            f"else {DATA_ROOT_HELP}; downloads go to <data root>/DATASET)")
        p.add_argument("--download", action="store_true",
                       help="fetch the official archives into --root first (default: off; Stanford Cars and the "
                            "shared 32x32 sets have no download)")
        p.add_argument("--check-images", action="store_true",
                       help="also decode every image and count unreadable ones (default: off; about 1-5 ms per image)")
        p.set_defaults(func=run_prepare)
        return
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. caltech101-32, food101)")
    p.add_argument("--split", default="train", choices=("train", "test", "all"), help="dataset split (default: train)")
    p.add_argument("--resolution", type=int, default=None,
                   help="image side in pixels before encoding (default: the dataset's nominal resolution)")
    p.add_argument("--vae", default=DEFAULT_VAE, help=f"{', '.join(VAE_NAMES)}, a Hugging Face id or a local diffusers "
                                                      f"AutoencoderKL folder (default: {DEFAULT_VAE})")
    p.add_argument("--cache-dir", default=None, help="cache root (default: <results>/cache/latents)")
    p.add_argument("--data-root", default=None, help=f"dataset root (default: {DATA_ROOT_HELP})")
    p.add_argument("--batch-size", type=int, default=64, help="images per encoder batch, each also mirrored (default: 64)")
    p.add_argument("--chunk-size", type=int, default=1024, help="images per resumable chunk file (default: 1024)")
    p.add_argument("--num-workers", type=int, default=4, help="data-loader processes (default: 4)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="storage dtype of mean and std (default: float32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_latents)


def run_prepare(args) -> int:
    if args.exp:
        from benchmark.harness.loading import load_experiment  # the harness only for --exp

        exp = load_experiment(args.exp)
        names = [args.dataset] if args.dataset else exp.dataset_names()
        if names[0] not in exp.dataset_names():
            raise UserError(f"{names[0]} is not a dataset of experiment {exp.name} ({', '.join(exp.dataset_names())})")
        root = Path(args.root).expanduser() if args.root else exp.data_dir()
        codes = [_prepare(get_spec(exp.dataset(name)), root, args) for name in names]
        return max(codes)
    if args.dataset is None:
        raise UserError("name a DATASET to check (e.g. dogbench prepare caltech101), or pass --exp NAME to check "
                        "an experiment's datasets")
    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset {args.dataset!r}{did_you_mean(args.dataset, DATASETS)}; choose one of "
                        f"{', '.join(DATASETS)}, or pass --exp NAME to check your own datasets in an experiment")
    return _prepare(get_spec(args.dataset), Path(args.root).expanduser() if args.root else data_root(), args)


def _prepare(spec, root: Path, args) -> int:
    if spec.path is not None:  # a user's own dataset lives at its own path
        root = spec.path
    if args.download:
        target = root if args.root or spec.path is not None else root / spec.name
        download(spec, target)
        root = target
    if spec.locate(root) is None and spec.npz and spec.locate(PACKAGED_DATA) is not None:
        # what `dogbench run` reads when the data root lacks it: check that copy, and say so
        print(f"{spec.name} is not under {root}; the copy that ships with the package is used ({PACKAGED_DATA})")
        root = PACKAGED_DATA
    if spec.locate(root) is None:
        print(placement_instructions(spec, root))
        return 1
    ok, lines = verify(spec, root, check_images=args.check_images)
    print("\n".join(lines))
    return 0 if ok else 1


def run_latents(args) -> int:
    if is_pixel_space(args.vae):
        print("pixel space (identity autoencoder): images are used as they are, nothing to cache")
        return 0
    for name in ("batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    dataset = get_dataset(args.dataset, split=args.split, root=args.data_root)
    autoencoder = load_autoencoder(args.vae)
    cache = build_latent_cache(dataset, autoencoder, args.resolution, args.cache_dir, batch_size=args.batch_size,
                               chunk_size=args.chunk_size, num_workers=args.num_workers, dtype=args.dtype,
                               device=args.device, progress=not args.no_progress)
    print(f"latent cache of {cache.num_images} images (x2 flips) complete: {cache.root}")
    return 0
