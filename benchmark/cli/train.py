"""``dogbench finetune`` and ``dogbench pretrain``: their flags are the training schema's fields."""
from __future__ import annotations

from pathlib import Path

from benchmark.cli.common import output_folder
from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.errors import UserError
from benchmark.io import DATA_ROOT_HELP
from benchmark.harness.loading import find_experiment, load_experiment, read_yaml
from benchmark.tracking import WandbRun, WandbSettings
from benchmark.training import LaunchSettings, TrainSettings, finetune, pretrain


def configure(p, name: str) -> None:
    if name == "finetune":
        p.add_argument("--source", default=None,
                       help="pre-trained checkpoint: a path or a release name such as DiT-XL-2-256x256.pt "
                            "(default: --config's source.checkpoint)")
        p.add_argument("--model", default=None, help="source architecture, e.g. DiT-XL/2, when the file does not say "
                                                     "(default: --config's source.model, else read from the file)")
        p.add_argument("--source-classes", type=int, default=None, help="classes of the source model (default: from the file)")
        p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: from the source model)")
        p.add_argument("--autoencoder", "--vae", dest="autoencoder", default=None,
                       help="sd-vae-ft-ema, sd-vae-ft-mse, identity (pixel space) or a local diffusers folder "
                            "(default: --config's, else the one the source file records, else sd-vae-ft-ema)")
        p.add_argument("--no-sanity-check", action="store_true",
                       help="skip the source's sanity probe (its denoising error on 32 target images must be below "
                            "0.5; random stand-in weights fail it) (default: probe before a fresh run)")
    else:
        p.add_argument("--model", required=True, help="named DiT config, e.g. DiT-N/2, DiT-Ti/4, DiT-S/2")
        p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the dataset's)")
        p.add_argument("--autoencoder", "--vae", dest="autoencoder", default="identity",
                       help="identity (pixel space) or a VAE as for finetune (default: identity)")
        p.add_argument("--no-learn-sigma", action="store_true", help="predict eps only (fixed variance); default learns it")
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. caltech101-32, food101)")
    p.add_argument("--out", required=True, help="run directory (resumes when it holds the same run)")
    p.add_argument("--config", default=None,
                   help="an experiment (name or YAML: its finetune: section, and for finetune its source:, autoencoder "
                        "and data_root) or a YAML file with a finetune: / pretrain: section")
    add_settings_flags(p.add_argument_group("training settings (default: --config, else the value shown)"), TrainSettings)
    add_settings_flags(p.add_argument_group("where it runs"), LaunchSettings)
    p.add_argument("--data-root", default=None, help=f"dataset root (default: {DATA_ROOT_HELP})")
    p.add_argument("--cache-dir", default=None, help="latent cache root (default: <results>/cache/latents)")
    p.add_argument("--max-images", type=int, default=None, help="train on this many images, evenly spread (smoke tests)")
    p.add_argument("--no-wandb", action="store_true", help="no Weights & Biases logging (the CSV log is always written)")
    p.add_argument("--wandb-mode", default=None, choices=("auto", "online", "offline"),
                   help="W&B mode; auto = online with credentials, else offline into <out>/wandb (default: auto)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: --config's, else dogbench)")
    p.add_argument("--wandb-dir", default=None,
                   help="write the W&B run under DIR/wandb, not <out>/wandb (e.g. results/<exp>, beside the "
                        "experiment's other runs)")
    p.add_argument("--wandb-group", default=None, help="W&B group of the run (e.g. the experiment's name)")
    p.add_argument("--export", default=None, help="also copy the EMA export to this path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_finetune if name == "finetune" else run_pretrain)


def read_config(config, command: str) -> tuple[dict, dict]:
    """(training settings, extras) from --config: an experiment (extras: source, autoencoder, data_root, wandb)
    or a YAML file with a ``<command>:`` or ``finetune:`` section (or the settings at top level)."""
    if not config:
        return {}, {}
    path = Path(config).expanduser()
    data = read_yaml(path) if path.is_file() else None
    if data is None or "datasets" in data or "base" in data:  # an experiment
        exp = load_experiment(path if path.is_file() else find_experiment(config), check_storage=False)
        source = {**exp.source.to_dict(), "checkpoint": exp.source_checkpoint()}
        data_root = str(exp.data_dir()) if exp.data_root else None
        extras = {"source": source, "autoencoder": exp.autoencoder_spec(), "data_root": data_root,
                  "wandb": exp.tracking.wandb}
        return exp.finetune.to_dict(), extras
    section = data.get(command, data.get("finetune", data))
    if not isinstance(section, dict):
        raise UserError(f"{path}: the {command}: section must be a mapping of settings")
    return dict(section), {}


def _options(args, extras: dict) -> dict:
    wandb = WandbSettings.parse(extras.get("wandb"))
    changes = {}
    if args.no_wandb:
        changes["enabled"] = False
    if args.wandb_mode:
        changes["mode"] = args.wandb_mode
    if args.wandb_project:
        changes["project"] = args.wandb_project
    return dict(data_root=args.data_root or extras.get("data_root"), launch=settings_from_args(LaunchSettings, args),
                wandb=wandb.replaced(**changes), progress=not args.no_progress, latent_cache_dir=args.cache_dir,
                wandb_run=WandbRun(directory=Path(args.wandb_dir) if args.wandb_dir else None, group=args.wandb_group),
                max_images=args.max_images, export_path=args.export)


def run_finetune(args) -> int:
    output_folder(args.out)  # before anything is read: an --out that is a file or read-only loses nothing
    base, extras = read_config(args.config, "finetune")
    settings = settings_from_args(TrainSettings, args, base)
    source = extras.get("source") or {}
    checkpoint = args.source or source.get("checkpoint")
    if not checkpoint:
        raise UserError("finetune needs --source CKPT (e.g. DiT-XL-2-256x256.pt) or --config with a source: section")
    model = args.model or source.get("model")
    finetune(checkpoint, args.dataset, args.out, settings, source_model=model,
             source_num_classes=(args.source_classes or source.get("num_classes")) if model else args.source_classes,
             image_size=args.image_size or source.get("image_size"),
             autoencoder=args.autoencoder or extras.get("autoencoder"),  # None: the one the source records
             sanity_check=not args.no_sanity_check and source.get("sanity_check", True), **_options(args, extras))
    return 0


def run_pretrain(args) -> int:
    output_folder(args.out)
    base, extras = read_config(args.config, "pretrain")
    settings = settings_from_args(TrainSettings, args, base)
    pretrain(args.model, args.dataset, args.out, settings, image_size=args.image_size, autoencoder=args.autoencoder,
             learn_sigma=not args.no_learn_sigma, **_options(args, extras))
    return 0
