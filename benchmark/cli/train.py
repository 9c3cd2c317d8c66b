"""``dogbench finetune`` and ``dogbench pretrain``: their flags are the fields of the settings the training entry
points take (the source model or the new architecture, the autoencoder, the training recipe, where it runs)."""
from __future__ import annotations

from pathlib import Path

from benchmark.cli.common import output_folder
from benchmark.cli.flags import add_settings_flags, settings_from_args
from benchmark.errors import UserError
from benchmark.io import DATA_ROOT_HELP
from benchmark.harness.finetunes import one_finetune
from benchmark.harness.loading import find_experiment, load_experiment, read_yaml
from benchmark.models import DEFAULT_VAE
from benchmark.models.settings import ArchitectureSettings, AutoencoderSettings, SourceSettings
from benchmark.tracking import WandbRun, WandbSettings
from benchmark.training import LaunchSettings, RunOutput, TrainingSet, TrainSettings, finetune, pretrain

# the source model's flags, as they always were spelled
SOURCE_FLAGS = {"checkpoint": ["source"], "num_classes": ["source_classes"]}
FROM_FILE = {"model": None, "num_classes": None, "image_size": None}  # what the checkpoint says, unless given
VAE_FLAGS = {"autoencoder": ["autoencoder", "vae"]}


def configure(p, name: str) -> None:
    if name == "finetune":
        add_settings_flags(p.add_argument_group("the source model (default: --config's source:, else the file's)"),
                           SourceSettings, names=SOURCE_FLAGS, dest_prefix="source_",
                           defaults={"checkpoint": "--config's", "model": "from the file",
                                     "num_classes": "from the file", "image_size": "from the source model"})
    else:
        add_settings_flags(p.add_argument_group("the new model"), ArchitectureSettings,
                           defaults={"model": "required"})
    vae_default = f"--config's, else the one the source file records, else {DEFAULT_VAE}" if name == "finetune" \
        else "identity"
    add_settings_flags(p, AutoencoderSettings, names=VAE_FLAGS, defaults={"autoencoder": vae_default})
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
        exp = one_finetune(load_experiment(path if path.is_file() else find_experiment(config), check_storage=False),
                           f"dogbench {command} --config")
        source = {**exp.source.to_dict(), "checkpoint": exp.source_checkpoint()}
        data_root = str(exp.data_dir()) if exp.data_root else None
        extras = {"source": source, "autoencoder": exp.autoencoder_spec(), "data_root": data_root,
                  "wandb": exp.tracking.wandb}
        return exp.finetune.to_dict(), extras
    section = data.get(command, data.get("finetune", data))
    if not isinstance(section, dict):
        raise UserError(f"{path}: the {command}: section must be a mapping of settings")
    return dict(section), {}


def _run_values(args, extras: dict) -> tuple[TrainingSet, RunOutput, LaunchSettings]:
    """What is trained on, where the run goes and where it runs, from the flags (and --config's extras)."""
    wandb = WandbSettings.parse(extras.get("wandb"))
    changes = {}
    if args.no_wandb:
        changes["enabled"] = False
    if args.wandb_mode:
        changes["mode"] = args.wandb_mode
    if args.wandb_project:
        changes["project"] = args.wandb_project
    data = TrainingSet(args.dataset, args.data_root or extras.get("data_root"), args.cache_dir, args.max_images)
    out = RunOutput(Path(args.out), args.export, wandb.replaced(**changes),
                    WandbRun(directory=Path(args.wandb_dir) if args.wandb_dir else None, group=args.wandb_group),
                    progress=not args.no_progress)
    return data, out, settings_from_args(LaunchSettings, args)


def run_finetune(args) -> int:
    output_folder(args.out)  # before anything is read: an --out that is a file or read-only loses nothing
    base, extras = read_config(args.config, "finetune")
    settings = settings_from_args(TrainSettings, args, base)
    if args.source_checkpoint is None and "source" not in extras:
        raise UserError("finetune needs --source CKPT (e.g. DiT-XL-2-256x256.pt) or --config with a source: section")
    source = settings_from_args(SourceSettings, args, extras.get("source", FROM_FILE), dest_prefix="source_")
    # the autoencoder typed or --config's; else None: the one the source file records (read after the source)
    given = {"autoencoder": extras["autoencoder"]} if "autoencoder" in extras else None
    autoencoder = settings_from_args(AutoencoderSettings, args, given).autoencoder \
        if args.autoencoder is not None or given else None
    data, out, launch = _run_values(args, extras)
    finetune(source, data, out, settings, launch, autoencoder)
    return 0


def run_pretrain(args) -> int:
    output_folder(args.out)
    base, extras = read_config(args.config, "pretrain")
    settings = settings_from_args(TrainSettings, args, base)
    architecture = settings_from_args(ArchitectureSettings, args)
    autoencoder = settings_from_args(AutoencoderSettings, args, {"autoencoder": "identity"}).autoencoder
    data, out, launch = _run_values(args, extras)
    pretrain(architecture, data, out, settings, launch, autoencoder)
    return 0
