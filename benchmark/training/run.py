"""``dogbench finetune`` and ``dogbench pretrain``, and the Python API behind them (what the harness calls).

    finetune("DiT-XL-2-256x256.pt", "food101", "results/paper/food101/finetune", {"steps": 24000})
    pretrain("DiT-N/2", "cifar10-32", "results/source", {"steps": 20000, "global_batch_size": 128})

Both return the path of the EMA-only export (``<out>/ema.pt``) that ``dogbench sample`` reads.

The run directory (``out``) holds ``run.json`` (what is trained: refuses to resume a different run),
``checkpoints/last.ckpt`` (model, EMA, optimizer, step; written atomically every ``checkpoint_every`` steps and at
the end), ``csv/version_*/metrics.csv``, ``wandb/`` and, when finished, ``ema.pt`` and ``trained.json`` (steps,
throughput). Rerunning the same command resumes from the last checkpoint, or returns at once when the run is
finished; asking for more steps continues a finished run.

Multi-GPU / multi-node: ``--devices N --num-nodes M`` with Lightning's DDP (``--strategy fsdp`` shards the model).
Lightning starts the extra processes by re-running the command line, so run multi-device training through this
command (or ``torchrun ... -m benchmark.cli finetune``), not from inside a longer script.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch

from benchmark.cli import UserError
from benchmark.io import atomic_write_json, cached_file_sha256, read_json

EMA_FILE = "ema.pt"
TRAINED_FILE = "trained.json"  # written when the run has reached its steps
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")


@dataclasses.dataclass
class TrainSettings:
    """The training recipe; the defaults are the paper's fine-tuning protocol (DiT-XL/2, 24k steps at batch 32)."""

    steps: int = 24000              # optimizer steps
    global_batch_size: int = 32     # images per step, summed over all devices
    lr: float = 1.0e-4              # AdamW learning rate, constant
    weight_decay: float = 0.0       # AdamW weight decay
    ema_decay: float = 0.9999       # EMA of the weights (what sampling uses)
    label_dropout: float = 0.1      # probability that a label is replaced by the null label
    precision: str = "bf16-mixed"   # Lightning precision on GPU; CPU runs use 32-true
    checkpoint_every: int = 2000    # steps between resumable checkpoints
    num_workers: int = 4            # data-loader processes
    seed: int = 0                   # new label table, data order, noise, label dropout

    # what changes how fast a run goes or how long it is, not what it computes: may differ on resume
    NOT_IDENTITY = ("steps", "checkpoint_every", "num_workers")

    def __post_init__(self):
        for f in dataclasses.fields(self):  # YAML and the command line may give "1e-4" or 100.0
            kind = {"int": int, "float": float}.get(f.type, str)
            value = getattr(self, f.name)
            try:
                if kind is int and float(value) != int(float(value)):
                    raise ValueError
                setattr(self, f.name, kind(float(value)) if kind is int else kind(value))
            except (TypeError, ValueError):
                raise UserError(f"training setting {f.name} must be {kind.__name__}, got {value!r}") from None
        for name in ("steps", "global_batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("num_workers", "seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr <= 1:
            raise UserError(f"lr must be in (0, 1], got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.label_dropout < 1:
            raise UserError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.precision == "bf16-true":
            raise UserError("precision bf16-true keeps the weights in bf16, where a 0.9999 EMA cannot move; use bf16-mixed")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    @classmethod
    def coerce(cls, settings: Union[None, dict, "TrainSettings", Any]) -> "TrainSettings":
        """From a dict (e.g. an experiment's ``finetune:`` section), a dataclass with these fields (the harness's
        FinetuneConfig) or None (the defaults). Unknown keys are an error naming the nearest known one."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        if dataclasses.is_dataclass(settings):
            settings = dataclasses.asdict(settings)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in settings if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            raise UserError(f"unknown training setting {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                            + f"; known: {', '.join(known)}")
        return cls(**settings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self.NOT_IDENTITY}


# ----------------------------------------------------------------------------------------------------------------
# Loggers, strategy, devices


def _finish_wandb(loggers) -> None:
    for logger in loggers:
        if hasattr(logger, "finish"):
            logger.finish()


def _wandb_mode(wandb: Union[bool, str]) -> str:
    if wandb is False or wandb in ("disabled", "none", "off"):
        return "disabled"
    mode = "auto" if wandb is True else str(wandb)
    try:
        from benchmark.harness.tracking import resolve_mode
    except ImportError:
        return "offline" if mode == "auto" else mode
    return resolve_mode(mode)


def _make_loggers(out_dir: Path, run_id: str, config: dict, wandb: Union[bool, str], project: str,
                  entity: Optional[str]) -> list:
    from lightning.pytorch.loggers import CSVLogger

    from benchmark.training.callbacks import SafeWandbLogger, _first_line

    loggers = [CSVLogger(str(out_dir), name="csv")]
    mode = _wandb_mode(wandb)
    if mode == "disabled":
        return loggers
    try:
        logger = SafeWandbLogger(save_dir=str(out_dir), project=project, entity=entity, name=out_dir.name,
                                 id=run_id, resume="allow", mode=mode, config=config)
        _ = logger.experiment  # start the run now, so that a failure is a warning here and not an error later
    except Exception as e:  # noqa: BLE001 - a W&B failure is a warning, never a failed run
        warnings.warn(f"W&B could not start ({_first_line(e)}); "
                      f"training continues with the CSV log only (pass --no-wandb to skip W&B)", RuntimeWarning)
        return loggers
    return loggers + [logger]


def _strategy(name: str):
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from benchmark.models.dit import DiT, DiTBlock

        # DiT is a wrap unit of its own so that the model and its EMA shard identically: the EMA update is then an
        # elementwise operation on matching local shards. Full state dicts keep checkpoints readable everywhere.
        return FSDPStrategy(auto_wrap_policy={DiT, DiTBlock}, state_dict_type="full", use_orig_params=True)
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _parse_devices(devices: Union[int, str, list]) -> Union[int, str, list]:
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    return devices


# ----------------------------------------------------------------------------------------------------------------
# The training run shared by finetune and pretrain


def train(model, dataset_name: str, out_dir: Union[str, os.PathLike], settings: TrainSettings, *, kind: str,
          autoencoder: str, resolution: int, metadata: dict, data_root=None, cache_dir=None,
          max_images: Optional[int] = None, devices: Union[int, str, list] = "auto", num_nodes: int = 1,
          accelerator: str = "auto", strategy: str = "auto", wandb: Union[bool, str] = "auto",
          wandb_project: str = "dogbench", wandb_entity: Optional[str] = None, progress: bool = True,
          export_path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Train ``model`` (a DiT whose label table already has the dataset's classes) on ``dataset_name`` into
    ``out_dir``; resumes, or returns at once when finished. Returns the EMA export's path."""
    import lightning as L

    from benchmark.models import export_checkpoint
    from benchmark.training.callbacks import AtomicCheckpointIO, StepCheckpoint
    from benchmark.training.datamodule import TrainingData
    from benchmark.training.module import DiffusionTrainer

    out_dir = Path(out_dir)
    ema_path = out_dir / EMA_FILE
    identity = {"kind": kind, "dataset": dataset_name, "autoencoder": str(autoencoder), "resolution": int(resolution),
                "max_images": max_images, "model_config": dict(model.config), "settings": settings.identity(),
                **{k: v for k, v in metadata.items() if k.endswith("sha256")}}
    run = read_json(out_dir / "run.json")
    if run is not None and run.get("identity") != identity:
        differ = sorted(k for k in set(identity) | set(run.get("identity", {}))
                        if identity.get(k) != run.get("identity", {}).get(k))
        raise UserError(f"{out_dir} holds another training run (differs in {', '.join(differ)}); "
                        f"pass another output directory or delete it")
    trained = read_json(out_dir / TRAINED_FILE)
    if trained is not None and trained.get("steps", 0) > settings.steps:
        raise UserError(f"{out_dir} already holds a run of {trained['steps']} steps, more than the {settings.steps} "
                        f"asked for; pass another output directory")
    if run is not None and trained is not None and trained.get("steps") == settings.steps and ema_path.is_file():
        if export_path:
            _copy_export(ema_path, Path(export_path))
        print(f"{kind}: {out_dir} is finished ({settings.steps} steps); EMA weights in {ema_path}")
        return ema_path
    run_id = (run or {}).get("wandb_id") or uuid.uuid4().hex[:12]

    on_gpu = _on_gpu(accelerator)
    precision = settings.precision
    if not on_gpu and precision not in ("32-true", "32"):
        print(f"{kind}: training on CPU in fp32 (32-true), not {precision}", file=sys.stderr)
        precision = "32-true"  # the protocol's CPU precision; bf16 autocast gains little on CPUs
    data = TrainingData(dataset_name, resolution, settings.global_batch_size, autoencoder=autoencoder,
                        data_root=data_root, seed=settings.seed, num_workers=settings.num_workers,
                        cache_dir=cache_dir, max_images=max_images, progress=progress)
    module = DiffusionTrainer(model, lr=settings.lr, weight_decay=settings.weight_decay,
                              ema_decay=settings.ema_decay, label_dropout=settings.label_dropout,
                              seed=settings.seed, global_batch_size=settings.global_batch_size)
    trainer = L.Trainer(
        max_steps=settings.steps, max_epochs=-1, accelerator="gpu" if on_gpu and accelerator == "auto" else accelerator,
        devices=_parse_devices(devices), num_nodes=num_nodes, strategy=_strategy(strategy), precision=precision,
        callbacks=[StepCheckpoint(out_dir / LAST_CHECKPOINT, settings.checkpoint_every)],
        logger=False, enable_checkpointing=False, use_distributed_sampler=False, enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, settings.steps // 20)),
        limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=str(out_dir),
        plugins=[AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "run.json", {"identity": identity, "settings": settings.to_dict(),
                                                 "metadata": metadata, "wandb_id": run_id})
    # loggers after the Trainer: it knows this process's rank, and W&B starts only on rank 0
    config = {**identity, "settings": settings.to_dict(), **metadata, "precision": precision}
    trainer.loggers = _make_loggers(out_dir, run_id, config, wandb, wandb_project, wandb_entity) \
        if trainer.is_global_zero else []
    last = out_dir / LAST_CHECKPOINT
    # the EMA copy stays in eval mode on purpose (module.py sets this filter too, for spawned processes)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    t0 = time.perf_counter()
    if last.is_file():
        print(f"{kind}: resuming {out_dir} from {last}", file=sys.stderr)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1); to callers it is an interruption
            raise KeyboardInterrupt from None
        raise
    finally:
        _finish_wandb(trainer.loggers)
    wall = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return ema_path
    # what the run reached is what its last checkpoint holds: the same for every strategy (with ddp_spawn the
    # training happened in other processes; with FSDP the EMA in memory is sharded)
    step, ema_state = _final_state(last)
    if step < settings.steps:  # stopped early without an error (e.g. a cluster's SIGTERM)
        raise UserError(f"training stopped at step {step} of {settings.steps}; rerun the same command to resume")
    if step > settings.steps:  # resumed from a checkpoint that had already gone further
        raise UserError(f"{last} is at step {step}, past the {settings.steps} steps asked for; "
                        f"pass --steps {step} or another output directory")
    export_checkpoint(model, ema_path, ema_state=ema_state, autoencoder=str(autoencoder), dataset=dataset_name,
                      num_classes=model.num_classes, steps=step, image_size=int(resolution), **metadata)
    if export_path:
        _copy_export(ema_path, Path(export_path))
    first_step, started = module.session_start or (step, time.perf_counter())
    steps_run, train_s = step - first_step, time.perf_counter() - started
    img_per_s = steps_run * settings.global_batch_size / train_s if steps_run and train_s > 0 else None
    atomic_write_json(out_dir / TRAINED_FILE, {
        "steps": step, "ema": str(ema_path), "checkpoint": str(last), "precision": precision,
        "session": {"steps": steps_run, "train_s": round(train_s, 2), "wall_s": round(wall, 2),
                    "img_per_s": round(img_per_s, 2) if img_per_s else None}})
    print(f"{kind}: {step} steps done ({steps_run} this session, {train_s:.0f} s"
          + (f", {img_per_s:.1f} img/s" if img_per_s else "") + f"); EMA weights in {ema_path}")
    return ema_path


def _final_state(last: Path) -> tuple[int, dict]:
    """(optimizer steps, EMA weights) of a Lightning checkpoint written by ``train``."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    ema = {k[len("ema."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("ema.")}
    return int(checkpoint["global_step"]), ema


def _copy_export(src: Path, dst: Path) -> None:
    from benchmark.io import atomic_write_bytes

    if dst.resolve() != src.resolve():
        atomic_write_bytes(dst, src.read_bytes())
        print(f"EMA export copied to {dst}")


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _autoencoder_geometry(autoencoder: str) -> tuple[int, Optional[int]]:
    """(downsampling factor, latent channels) of an autoencoder spec; loads the VAE once, so a missing VAE is a
    FileNotFoundError (naming where to put it) before anything else happens."""
    from benchmark.data.latents import is_pixel_space
    from benchmark.models import load_autoencoder

    if is_pixel_space(autoencoder):
        return 1, 3
    vae = load_autoencoder(autoencoder)
    return vae.downsample, vae.latent_channels()


def _dataset_classes(dataset_name: str, data_root) -> int:
    from benchmark.data import get_dataset

    return get_dataset(dataset_name, split="train", root=data_root).num_classes


def finetune(source: Union[str, os.PathLike], dataset: str, out_dir: Union[str, os.PathLike],
             settings: Union[None, dict, TrainSettings, Any] = None, *, data_root=None,
             autoencoder: str = "sd-vae-ft-ema", source_model: Union[None, str, dict] = None,
             source_num_classes: Optional[int] = None, image_size: Optional[int] = None,
             devices: Union[int, str, list] = "auto", num_nodes: int = 1, accelerator: str = "auto",
             strategy: str = "auto", wandb: Union[bool, str] = "auto", wandb_project: str = "dogbench",
             wandb_entity: Optional[str] = None, progress: bool = True, latent_cache_dir=None,
             max_images: Optional[int] = None, export_path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Fine-tune the pre-trained DiT in ``source`` (a path or a release name) on registered dataset ``dataset``: the
    source is re-headed to the dataset's K classes (every weight kept except a fresh label table with a null row K)
    and trained with ``settings`` (a dict or the harness's FinetuneConfig; default: the paper's protocol).
    ``source_model`` (a DiT name or a dict of DiT arguments), ``source_num_classes`` and ``image_size`` describe the
    source when the file does not (the released DiT-XL-2-256x256.pt: "DiT-XL/2", 1000, 256); otherwise the file's
    own config (or its shapes) decide. ``wandb``: True/"auto", "online", "offline" or False.
    Returns ``<out_dir>/ema.pt``, the EMA weights that ``dogbench sample`` reads."""
    from benchmark.models import load_dit, reheaded, resolve_checkpoint

    settings = TrainSettings.coerce(settings)
    downsample, channels = _autoencoder_geometry(autoencoder)
    if image_size is not None and image_size % downsample:
        raise UserError(f"image size {image_size} is not a multiple of the autoencoder's downsampling {downsample}")
    path = resolve_checkpoint(source)
    if isinstance(source_model, dict):  # DiT constructor arguments (an experiment's source.model may be a dict)
        pretrained = load_dit(path, model=source_model, num_classes=source_num_classes)
    else:  # a named architecture (the DiT release files hold no config) takes the autoencoder's channels
        pretrained = load_dit(path, model=source_model, num_classes=source_num_classes,
                              input_size=image_size // downsample if (source_model and image_size) else None,
                              **({"in_channels": channels} if source_model else {}))
    resolution = pretrained.config["input_size"] * downsample
    if image_size is not None and image_size != resolution:
        raise UserError(f"the source model works at {resolution}px with autoencoder {autoencoder!r}, not {image_size}px; "
                        f"pass --image-size {resolution} or the matching source")
    if pretrained.config["in_channels"] != channels:
        raise UserError(f"the source model takes {pretrained.config['in_channels']} input channels but autoencoder "
                        f"{autoencoder!r} makes {channels}; pass the autoencoder it was trained with")
    num_classes = _dataset_classes(dataset, data_root)
    new = reheaded(pretrained, num_classes, seed=settings.seed)
    metadata = {"source": str(path), "source_sha256": cached_file_sha256(path), "source_num_classes": pretrained.num_classes}
    return train(new, dataset, out_dir, settings, kind="finetune", autoencoder=autoencoder, resolution=resolution,
                 metadata=metadata, data_root=data_root, cache_dir=latent_cache_dir, max_images=max_images, devices=devices,
                 num_nodes=num_nodes, accelerator=accelerator, strategy=strategy, wandb=wandb,
                 wandb_project=wandb_project, wandb_entity=wandb_entity, progress=progress, export_path=export_path)


def pretrain(model: Union[str, dict], dataset: str, out_dir: Union[str, os.PathLike],
             settings: Union[None, dict, TrainSettings, Any] = None, *, data_root=None, autoencoder: str = "identity",
             image_size: Optional[int] = None, learn_sigma: bool = True, devices: Union[int, str, list] = "auto",
             num_nodes: int = 1, accelerator: str = "auto", strategy: str = "auto", wandb: Union[bool, str] = "auto",
             wandb_project: str = "dogbench", wandb_entity: Optional[str] = None, progress: bool = True,
             latent_cache_dir=None, max_images: Optional[int] = None,
             export_path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Train a DiT from scratch on registered dataset ``dataset`` (e.g. the 32x32 CIFAR-10 source model:
    ``"DiT-N/2"``, identity autoencoder). ``model`` is a name from ``benchmark.models.DiT_models`` or a dict of
    DiT arguments; input size, channels and classes follow the data. Returns ``<out_dir>/ema.pt``."""
    from benchmark.models import DiT, dit_config

    settings = TrainSettings.coerce(settings)
    downsample, channels = _autoencoder_geometry(autoencoder)
    if image_size is None:
        from benchmark.data import get_spec

        image_size = get_spec(dataset).resolution
    if image_size % downsample:
        raise UserError(f"image size {image_size} is not a multiple of the autoencoder's downsampling {downsample}")
    num_classes = _dataset_classes(dataset, data_root)
    arch = dict(input_size=image_size // downsample, in_channels=channels, num_classes=num_classes,
                class_dropout_prob=settings.label_dropout, learn_sigma=learn_sigma)
    if isinstance(model, dict):
        config = {**model, **arch}
        name = "custom"
    else:
        try:
            config = dit_config(model, **arch)
        except ValueError as e:
            raise UserError(str(e)) from None
        name = model
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(settings.seed)  # the initialisation is part of the run's identity
    try:
        network = DiT(**config)
    finally:
        torch.random.set_rng_state(generator_state)
    return train(network, dataset, out_dir, settings, kind="pretrain", autoencoder=autoencoder,
                 resolution=image_size, metadata={"model_name": name}, data_root=data_root, cache_dir=latent_cache_dir,
                 max_images=max_images, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
                 strategy=strategy, wandb=wandb, wandb_project=wandb_project, wandb_entity=wandb_entity,
                 progress=progress, export_path=export_path)


# ----------------------------------------------------------------------------------------------------------------
# dogbench finetune / dogbench pretrain


SETTING_FLAGS = {  # flag -> (type, help with units)
    "steps": (int, "optimizer steps"),
    "global_batch_size": (int, "images per optimizer step, summed over all devices"),
    "lr": (float, "AdamW learning rate (constant)"),
    "weight_decay": (float, "AdamW weight decay"),
    "ema_decay": (float, "decay of the weights' EMA, updated every step (sampling uses the EMA)"),
    "label_dropout": (float, "probability that a label is replaced by the null label (trains CFG's guide)"),
    "precision": (str, "Lightning precision on GPU: 32-true, bf16-mixed, 16-mixed (CPU runs use 32-true)"),
    "checkpoint_every": (int, "steps between resumable checkpoints"),
    "num_workers": (int, "data-loader processes per device"),
    "seed": (int, "seed of the new label table / initialisation, data order, noise and label dropout"),
}


def _add_common(p: argparse.ArgumentParser, defaults: TrainSettings) -> None:
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. caltech101-32, food101)")
    p.add_argument("--out", required=True, help="run directory (resumes when it holds the same run)")
    p.add_argument("--config", default=None,
                   help="YAML with the training settings: an experiment name/file (its finetune: section, and for "
                        "finetune its source:, autoencoder and data_root), or a file with a finetune:/pretrain: section")
    group = p.add_argument_group("training settings (default: --config, else the value shown)")
    for name, (kind, text) in SETTING_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        choices = PRECISIONS if name == "precision" else None
        group.add_argument(flag, type=kind, default=None, choices=choices, help=f"{text} (default: {default})")
    p.add_argument("--data-root", default=None, help="dataset root (default: $DOGBENCH_DATA, else ../shared/data)")
    p.add_argument("--cache-dir", default=None, help="latent cache root (default: <results>/cache/latents)")
    p.add_argument("--max-images", type=int, default=None, help="train on this many images, evenly spread (smoke tests)")
    p.add_argument("--devices", default="auto", help="devices per node: a count, a list like 0,1, or auto (default: auto)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (default: 1)")
    p.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda"), help="default: auto")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="Lightning strategy: auto, ddp, ddp_spawn or fsdp (shards model and EMA) (default: auto)")
    p.add_argument("--no-wandb", action="store_true", help="no Weights & Biases logging (the CSV log is always written)")
    p.add_argument("--wandb-mode", default=None, choices=("auto", "online", "offline"),
                   help="W&B mode; auto = online with credentials, else offline into <out>/wandb (default: auto)")
    p.add_argument("--wandb-project", default=None, help="W&B project (default: dogbench)")
    p.add_argument("--export", default=None, help="also copy the EMA export to this path")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_command(subparsers) -> None:
    defaults = TrainSettings()
    p = subparsers.add_parser("finetune", help="fine-tune a pre-trained DiT on a target dataset (re-headed to its classes)",
                              description="Fine-tune a pre-trained class-conditional DiT on a target dataset: re-head it "
                                          "to the dataset's classes, train with AdamW + EMA, export the EMA weights.")
    p.add_argument("--source", default=None,
                   help="pre-trained checkpoint: a path or a release name such as DiT-XL-2-256x256.pt "
                        "(default: --config's source.checkpoint)")
    p.add_argument("--model", default=None, help="source architecture, e.g. DiT-XL/2, when the file does not say "
                                                 "(default: --config's source.model, else read from the file)")
    p.add_argument("--source-classes", type=int, default=None, help="classes of the source model (default: from the file)")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: from the source model)")
    p.add_argument("--autoencoder", "--vae", dest="autoencoder", default=None,
                   help="'sd-vae-ft-ema', 'sd-vae-ft-mse', 'identity' (pixel space) or a local diffusers directory "
                        "(default: --config's, else sd-vae-ft-ema)")
    _add_common(p, defaults)
    p.set_defaults(func=run_finetune)

    p = subparsers.add_parser("pretrain", help="train a DiT from scratch (e.g. the 32x32 CIFAR-10 source model)",
                              description="Train a class-conditional DiT from scratch; its EMA export is a source model "
                                          "for `dogbench finetune` and DoG's guide.")
    p.add_argument("--model", required=True, help="named DiT config, e.g. DiT-N/2, DiT-Ti/4, DiT-S/2")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default: the dataset's, 32 for the shared sets)")
    p.add_argument("--autoencoder", "--vae", dest="autoencoder", default="identity",
                   help="'identity' (pixel space) or a VAE spec as for finetune (default: identity)")
    p.add_argument("--no-learn-sigma", action="store_true", help="predict eps only (fixed variance); default learns it")
    _add_common(p, defaults)
    p.set_defaults(func=run_pretrain)


def _read_settings(config: Optional[str], command: str) -> tuple[dict, dict]:
    """(settings, extras) from --config: an experiment (validated by the harness; extras = source, autoencoder,
    data_root, wandb) or a YAML file with a ``<command>:`` or ``finetune:`` section (or the settings at top level)."""
    if not config:
        return {}, {}
    import yaml

    path = Path(config).expanduser()
    data = None
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a mapping of settings")
    if data is None or "datasets" in data or "base" in data:  # an experiment
        from benchmark.harness.config import load_experiment, resolve_path

        exp = load_experiment(config, check_storage=False)
        source = dataclasses.asdict(exp.source)
        # an experiment's paths are relative to the repository root (a bare release name is still found by name)
        source["checkpoint"] = str(resolve_path(source["checkpoint"]))
        autoencoder = exp.autoencoder
        if autoencoder not in ("identity", "sd-vae-ft-ema", "sd-vae-ft-mse") and resolve_path(autoencoder).is_dir():
            autoencoder = str(resolve_path(autoencoder))
        extras = {"source": source, "autoencoder": autoencoder, "data_root": str(exp.data_dir()) if exp.data_root else None,
                  "wandb": dataclasses.asdict(exp.tracking.wandb)}
        return dataclasses.asdict(exp.finetune), extras
    section = data.get(command, data.get("finetune", data))
    if not isinstance(section, dict):
        raise UserError(f"{path}: the {command}: section must be a mapping of settings")
    return dict(section), {}


def _settings_from_args(args, command: str) -> tuple[TrainSettings, dict]:
    settings, extras = _read_settings(args.config, command)
    for name in SETTING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    return TrainSettings.coerce(settings), extras


def _run_options(args, extras: dict) -> dict:
    wandb_cfg = extras.get("wandb") or {}
    if args.no_wandb or wandb_cfg.get("enabled") is False:
        wandb = False
    else:
        wandb = args.wandb_mode or wandb_cfg.get("mode") or "auto"
    return dict(data_root=args.data_root or extras.get("data_root"), devices=args.devices, num_nodes=args.num_nodes,
                accelerator=args.accelerator, strategy=args.strategy, wandb=wandb,
                wandb_project=args.wandb_project or wandb_cfg.get("project") or "dogbench",
                wandb_entity=wandb_cfg.get("entity"), progress=not args.no_progress, latent_cache_dir=args.cache_dir,
                max_images=args.max_images, export_path=args.export)


def run_finetune(args) -> int:
    settings, extras = _settings_from_args(args, "finetune")
    source = extras.get("source") or {}
    checkpoint = args.source or source.get("checkpoint")
    if not checkpoint:
        raise UserError("finetune needs --source CKPT (e.g. DiT-XL-2-256x256.pt) or --config with a source: section")
    model = args.model or source.get("model")
    finetune(checkpoint, args.dataset, args.out, settings, source_model=model,
             source_num_classes=(args.source_classes or source.get("num_classes")) if model else args.source_classes,
             image_size=args.image_size or source.get("image_size"),
             autoencoder=args.autoencoder or extras.get("autoencoder") or "sd-vae-ft-ema", **_run_options(args, extras))
    return 0


def run_pretrain(args) -> int:
    settings, extras = _settings_from_args(args, "pretrain")
    pretrain(args.model, args.dataset, args.out, settings, image_size=args.image_size, autoencoder=args.autoencoder,
             learn_sigma=not args.no_learn_sigma, **_run_options(args, extras))
    return 0
