"""Fine-tuning and pre-training runs: the API behind ``dogbench finetune`` / ``pretrain`` and the harness.

    finetune(SourceSettings(), "food101", "results/paper/food101/finetune", {"steps": 24000})   # DiT-XL/2 release
    pretrain("DiT-N/2", "cifar10-32", "results/source", {"steps": 20000, "global_batch_size": 128})

Both take settings objects (the source model's, the training recipe's, where it runs) and two small values (what is
trained on: ``TrainingSet``; where it goes: ``RunOutput``), and return the path of the EMA-only export
(``<out>/ema.pt``) that ``dogbench sample`` reads.

The run directory (``out``) holds ``run.json`` (what is trained: ``run_identity``; refuses to resume a different
run), ``checkpoints/last.ckpt`` (model, EMA, optimizer, step; written atomically every ``checkpoint_every`` steps and
at the end), ``csv/version_*/metrics.csv``, ``wandb/`` (unless ``RunOutput.wandb_run`` files the W&B run elsewhere:
the harness puts it in ``results/<exp>/wandb/``, in the experiment's group), ``ema-step<N>.pt`` for every step N of
``keep_ema_at`` (EMA exports like ``ema.pt``, e.g. autoguidance's weak guide) and, when finished, ``ema.pt`` and
``trained.json`` (steps, the kept snapshots, throughput). Rerunning the same command resumes from the last
checkpoint, or returns at once when the run is finished; asking for more steps continues a finished run.

Multi-GPU / multi-node: ``LaunchSettings(devices=N, num_nodes=M)`` with Lightning's DDP (``strategy="fsdp"``
shards the model). Lightning starts the extra processes by re-running the command line, so run multi-device training
through ``dogbench finetune`` (or under torchrun), not from inside a longer script.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import FSDPStrategy

from benchmark.data import DatasetSpec, get_dataset, get_spec
from benchmark.data.latents import is_pixel_space
from benchmark.devices import tf32
from benchmark.errors import UserError, first_line
from benchmark.io import atomic_open, atomic_write_json, cached_file_sha256, read_json
from benchmark.models import (DEFAULT_VAE, DiT, dit_config, export_checkpoint, load_autoencoder, load_dit, reheaded,
                              resolve_checkpoint)
from benchmark.models.adapter import adapter_modules, with_adapter
from benchmark.models.checkpoint import checkpoint_metadata
from benchmark.models.settings import ArchitectureSettings, SourceSettings
from benchmark.models.dit import DiTBlock
from benchmark.settings import AMOUNT
from benchmark.tracking import WandbRun, WandbSettings, tag
from benchmark.training.callbacks import (AtomicCheckpointIO, EmaSnapshots, SafeWandbLogger, StepCheckpoint,
                                          ema_snapshot_path, report_past_snapshots)
from benchmark.training.datamodule import TrainingData
from benchmark.training.module import DiffusionTrainer
from benchmark.training.probe import check_source
from benchmark.training.settings import LaunchSettings, TrainSettings
from benchmark.training.spec import NetworkToTrain, RunOutput, TrainingSet

EMA_FILE = "ema.pt"
TRAINED_FILE = "trained.json"  # written when the run has reached its steps
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
LIGHTNING_PRECISION = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed"}


# ----------------------------------------------------------------------------------------------------------------
# Loggers, strategy, devices


def _finish_wandb(loggers) -> None:
    for logger in loggers:
        if hasattr(logger, "finish"):
            logger.finish()


def _make_loggers(out_dir: Path, run_id: str, config: dict, wandb: WandbSettings, run: WandbRun = WandbRun()) -> list:
    """The CSV log in ``out_dir`` and, unless W&B is disabled, a W&B run filed as ``run`` says (default: under
    ``out_dir``, named after it)."""
    loggers = [CSVLogger(str(out_dir), name="csv")]
    mode = wandb.resolved_mode()
    if mode == "disabled":
        return loggers
    try:
        directory = Path(run.directory or out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        logger = SafeWandbLogger(save_dir=str(directory), project=wandb.project, entity=wandb.entity,
                                 name=run.name or out_dir.name, id=run_id, resume="allow", mode=mode,
                                 config={**config, **run.config}, group=run.group, job_type=run.job_type,
                                 tags=list(run.tags))
        _ = logger.experiment  # start the run now, so that a failure is a warning here and not an error later
    except Exception as e:  # noqa: BLE001 - a W&B failure is a warning, never a failed run
        warnings.warn(f"W&B could not start ({first_line(e)}); "
                      f"training continues with the CSV log only (pass --no-wandb, or tracking.wandb.enabled=false "
                      f"in an experiment, to skip W&B)", RuntimeWarning)
        return loggers
    return loggers + [logger]


def _strategy(name: str):
    if name == "fsdp":
        # DiT is a wrap unit of its own so that the model and its EMA shard identically: the EMA update is then an
        # elementwise operation on matching local shards. Full state dicts keep checkpoints readable everywhere.
        return FSDPStrategy(auto_wrap_policy={DiT, DiTBlock}, state_dict_type="full", use_orig_params=True)
    return name


def _on_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _parse_devices(devices: Union[int, str, list]) -> Union[int, str, list]:
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    return devices


def lightning_trainer(launch: LaunchSettings, precision: str, *, max_steps: int, progress: bool, out_dir: Path,
                      callbacks: list, log_every_n_steps: int = 50) -> L.Trainer:
    """The Lightning Trainer of every training run (and of ``dogbench perf``'s training measurement): step-based,
    no validation, no Lightning checkpointing or logging of its own, checkpoints written atomically."""
    on_gpu = _on_gpu(launch.accelerator)
    return L.Trainer(
        max_steps=max_steps, max_epochs=-1,
        accelerator="gpu" if on_gpu and launch.accelerator == "auto" else launch.accelerator,
        devices=_parse_devices(launch.devices), num_nodes=launch.num_nodes, strategy=_strategy(launch.strategy),
        precision=LIGHTNING_PRECISION[precision], callbacks=callbacks, logger=False, enable_checkpointing=False,
        use_distributed_sampler=False, enable_progress_bar=progress, enable_model_summary=False,
        log_every_n_steps=log_every_n_steps, limit_val_batches=0, num_sanity_val_steps=0,
        default_root_dir=str(out_dir), plugins=[AtomicCheckpointIO()])


# ----------------------------------------------------------------------------------------------------------------
# The training run shared by finetune and pretrain


def run_identity(net: NetworkToTrain, data: TrainingSet, settings: TrainSettings) -> dict:
    """What a run directory holds (``run.json``): a resumed or extended run must have the same. The training
    settings' identity without the steps (a finished run continues to more steps), the network's architecture and
    space, the data and the hashes of what it starts from."""
    return {"kind": net.kind, "dataset": get_spec(data.dataset).name, "autoencoder": str(net.autoencoder),
            "resolution": int(net.resolution), "max_images": data.max_images, "model_config": dict(net.model.config),
            "settings": settings.identity(AMOUNT), **{k: v for k, v in net.metadata.items() if k.endswith("sha256")}}


def train(net: NetworkToTrain, data: TrainingSet, out: RunOutput, settings: TrainSettings,
          launch: LaunchSettings = LaunchSettings()) -> Path:
    """Train ``net`` on ``data`` into ``out.out_dir``; resumes, or returns at once when finished. Returns the EMA
    export's path. ``out.wandb_run`` files the W&B run (directory, group, job type, name, extra tags and config); by
    default it goes to ``out_dir/wandb``."""
    out_dir, kind, metadata = out.out_dir, net.kind, net.metadata
    ema_path = out_dir / EMA_FILE
    dataset_name = get_spec(data.dataset).name
    identity = run_identity(net, data, settings)
    run = read_json(out_dir / "run.json")
    if run is not None and run.get("identity") != identity:
        differ = sorted(k for k in set(identity) | set(run.get("identity", {}))
                        if identity.get(k) != run.get("identity", {}).get(k))
        raise UserError(f"{out_dir} holds another training run (differs in {', '.join(differ)}); "
                        f"pass another output directory or delete it")
    trained = read_json(out_dir / TRAINED_FILE)
    export_metadata = dict(autoencoder=str(net.autoencoder), dataset=dataset_name, num_classes=net.model.num_classes,
                           image_size=int(net.resolution), **metadata)
    if trained is not None and trained.get("steps", 0) > settings.steps:
        raise UserError(f"{out_dir} already holds a run of {trained['steps']} steps, more than the {settings.steps} "
                        f"asked for; pass another output directory")
    if run is not None and trained is not None and trained.get("steps") == settings.steps and ema_path.is_file():
        report_past_snapshots(out_dir, settings.keep_ema_at, settings.steps, kind)
        if settings.steps in settings.keep_ema_at and not ema_snapshot_path(out_dir, settings.steps).is_file():
            _copy_export(ema_path, ema_snapshot_path(out_dir, settings.steps))  # the final EMA is that step's
        if out.export:
            _copy_export(ema_path, Path(out.export))
        print(f"{kind}: {out_dir} is finished ({settings.steps} steps); EMA weights in {ema_path}")
        return ema_path
    run_id = (run or {}).get("wandb_id") or uuid.uuid4().hex[:12]

    on_gpu = _on_gpu(launch.accelerator)
    precision = settings.precision if on_gpu else "fp32"  # bf16 autocast gains little on CPUs
    if precision != settings.precision:
        print(f"{kind}: training on CPU in fp32, not {settings.precision}", file=sys.stderr)
    # made inside _fit (the data module, and the loggers once the trainer knows this process's rank), so that
    # nothing of training outlives its frame
    make_data = functools.partial(
        TrainingData, data.dataset, net.resolution, settings.global_batch_size, autoencoder=net.autoencoder,
        split=settings.split, data_root=data.root, seed=settings.seed, num_workers=settings.num_workers,
        cache_dir=data.cache_dir, max_images=data.max_images, progress=out.progress)
    config = {**identity, "settings": settings.to_dict(), **metadata, "precision": precision,
              "steps": settings.steps, "seed": settings.seed, "out_dir": str(out_dir)}
    make_loggers = functools.partial(_make_loggers, out_dir, run_id, config, out.wandb,
                                     run=_filed(out.wandb_run or WandbRun(), kind, dataset_name, settings.seed))
    run_json = {"identity": identity, "settings": settings.to_dict(), "metadata": metadata, "wandb_id": run_id}
    is_main, session_start, wall = _fit(net.model, out_dir, settings, kind=kind, precision=precision, launch=launch,
                                        progress=out.progress, make_data=make_data, make_loggers=make_loggers,
                                        run_json=run_json, export_metadata=export_metadata)
    # Lightning's trainer and module refer to each other; they are unreachable now that _fit's frame is gone (any
    # frame that held them would keep them), and only the cycle collector frees them: do it before sampling starts
    gc.collect()
    if not is_main:
        return ema_path
    # what the run reached is what its last checkpoint holds: the same for every strategy (with ddp_spawn the
    # training happened in other processes; with FSDP the EMA in memory is sharded)
    last = out_dir / LAST_CHECKPOINT
    step, ema_state = _final_state(last)
    if step < settings.steps:  # stopped early without an error (e.g. a cluster's SIGTERM)
        raise UserError(f"training stopped at step {step} of {settings.steps}; rerun the same command to resume")
    if step > settings.steps:  # resumed from a checkpoint that had already gone further
        raise UserError(f"{last} is at step {step}, past the {settings.steps} steps asked for; "
                        f"pass --steps {step} (finetune.steps in an experiment) or another output directory")
    export_checkpoint(net.model, ema_path, ema_state=ema_state, steps=step, **export_metadata)
    if out.export:
        _copy_export(ema_path, Path(out.export))
    first_step, started = session_start or (step, time.perf_counter())
    steps_run, train_s = step - first_step, time.perf_counter() - started
    img_per_s = steps_run * settings.global_batch_size / train_s if steps_run and train_s > 0 else None
    snapshots = {str(n): str(ema_snapshot_path(out_dir, n)) for n in settings.keep_ema_at
                 if ema_snapshot_path(out_dir, n).is_file()}
    atomic_write_json(out_dir / TRAINED_FILE, {
        "steps": step, "ema": str(ema_path), "ema_snapshots": snapshots, "checkpoint": str(last), "precision": precision,
        "session": {"steps": steps_run, "train_s": round(train_s, 2), "wall_s": round(wall, 2),
                    "img_per_s": round(img_per_s, 2) if img_per_s else None}})
    print(f"{kind}: {step} steps done ({steps_run} this session, {train_s:.0f} s"
          + (f", {img_per_s:.1f} img/s" if img_per_s else "") + f"); EMA weights in {ema_path}")
    return ema_path


def _fit(model, out_dir: Path, settings: TrainSettings, *, kind: str, precision: str, launch: LaunchSettings,
         progress: bool, make_data, make_loggers, run_json: dict, export_metadata: dict
         ) -> tuple[bool, Optional[tuple], float]:
    """Run Lightning's fit for ``train``; returns (this process is rank 0, (first step, start time), wall seconds)
    with the training-only state freed."""
    data = make_data()
    module = DiffusionTrainer(model, lr=settings.lr, weight_decay=settings.weight_decay,
                              ema_decay=settings.ema_decay, label_dropout=settings.label_dropout,
                              seed=settings.seed, global_batch_size=settings.global_batch_size)
    trainer = lightning_trainer(launch, precision, max_steps=settings.steps, progress=progress, out_dir=out_dir,
                                callbacks=[StepCheckpoint(out_dir / LAST_CHECKPOINT, settings.checkpoint_every),
                                           EmaSnapshots(out_dir, settings.keep_ema_at, export_metadata, kind)],
                                log_every_n_steps=max(1, min(50, settings.steps // 20)))
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "run.json", run_json)
    # loggers after the Trainer: it knows this process's rank, and W&B starts only on rank 0
    trainer.loggers = make_loggers() if trainer.is_global_zero else []
    last = out_dir / LAST_CHECKPOINT
    # the EMA copy stays in eval mode on purpose (module.py sets this filter too, for spawned processes)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    t0 = time.perf_counter()
    if last.is_file():
        print(f"{kind}: resuming {out_dir} from {last}", file=sys.stderr)
    try:
        with tf32(precision != "fp32"):
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into sys.exit(1); to callers it is an interruption
            raise KeyboardInterrupt from None
        raise
    finally:
        _finish_wandb(trainer.loggers)
    wall = time.perf_counter() - t0
    _free_training_state(model, trainer, module)
    return trainer.is_global_zero, module.session_start, wall


def _free_training_state(model, trainer, module) -> None:
    """Drop what only training needs (gradients, AdamW's moments, the EMA copy, the data), so that a ``dogbench run``
    going on to sample holds one copy of the weights, not five (DiT-XL/2: 2.5 GiB against 12.6)."""
    model.zero_grad(set_to_none=True)
    for optimizer in trainer.optimizers:
        optimizer.state.clear()
    trainer.strategy.optimizers = []
    module.ema = None


def _filed(run: WandbRun, kind: str, dataset_name: str, seed: int) -> WandbRun:
    """``run`` with a job type (fine-tune or pretrain unless given) and tags for the dataset, the job and the seed."""
    job_type = run.job_type or ("fine-tune" if kind == "finetune" else kind)
    tags = [tag("dataset", dataset_name), tag("phase", job_type), tag("seed", seed), *run.tags]
    return dataclasses.replace(run, job_type=job_type, tags=tuple(dict.fromkeys(tags)))


def _final_state(last: Path) -> tuple[int, dict]:
    """(optimizer steps, EMA weights) of a Lightning checkpoint written by ``train``."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    ema = {k[len("ema."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("ema.")}
    return int(checkpoint["global_step"]), ema


def _copy_export(src: Path, dst: Path) -> None:
    if dst.resolve() != src.resolve():
        with atomic_open(dst, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 24)  # streamed: a DiT-XL/2 export is 2.7 GB
        print(f"EMA export copied to {dst}")


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _autoencoder_geometry(autoencoder: str) -> tuple[int, Optional[int]]:
    """(downsampling factor, latent channels) of an autoencoder spec; loads the VAE once, so a missing VAE is a
    FileNotFoundError (naming where to put it) before anything else happens."""
    if is_pixel_space(autoencoder):
        return 1, 3
    vae = load_autoencoder(autoencoder)
    return vae.downsample, vae.latent_channels()


def _dataset_classes(data: TrainingSet) -> int:
    return get_dataset(data.dataset, split="train", root=data.root).num_classes


def finetune(source: Union[SourceSettings, str, Path], data: Union[TrainingSet, str, DatasetSpec],
             out: Union[RunOutput, str, Path], settings: Union[TrainSettings, dict, None] = None,
             launch: LaunchSettings = LaunchSettings(), autoencoder: Optional[str] = None) -> Path:
    """Fine-tune the pre-trained DiT that ``source`` names on ``data``: the source is re-headed to the dataset's K
    classes (every weight kept except a fresh label table with a null row K; with ``settings.adapter`` the source's
    own weights stay frozen under a LoRA adapter) and trained with ``settings`` (default: the paper's protocol) in
    ``autoencoder``'s space (default: the one the source file records, else sd-vae-ft-ema). ``source``: a
    SourceSettings (an experiment's ``source:``), or a checkpoint path or release name whose file says the rest;
    null fields of a SourceSettings are read from the file (the released DiT-XL-2-256x256.pt holds none: give
    "DiT-XL/2", 1000, 256); with ``source.sanity_check`` a fresh run first refuses a source that does not denoise
    the target (``benchmark.training.probe``; a path or name alone is not probed). ``data``: a TrainingSet, or a
    registered dataset name / a user's own dataset's spec. ``out``: a RunOutput, or the run directory. Returns
    ``<out_dir>/ema.pt``, the EMA weights that ``dogbench sample`` reads."""
    source = source if isinstance(source, SourceSettings) else SourceSettings.from_checkpoint(str(source))
    data, out = TrainingSet.of(data), RunOutput.of(out)
    settings = TrainSettings.parse(settings, "finetune")
    path = resolve_checkpoint(source.checkpoint)  # the source first: a missing or unreadable file is the problem to name
    autoencoder = autoencoder or checkpoint_metadata(path).get("autoencoder") or DEFAULT_VAE
    downsample, channels = _autoencoder_geometry(autoencoder)
    image_size, model = source.image_size, source.model
    if image_size is not None and image_size % downsample:
        raise UserError(f"image size {image_size} is not a multiple of the autoencoder's downsampling {downsample}")
    if isinstance(model, dict):  # DiT constructor arguments (an experiment's source.model may be a dict)
        pretrained = load_dit(path, model=model, num_classes=source.num_classes)
    else:  # a named architecture (the DiT release files hold no config) takes the autoencoder's channels
        pretrained = load_dit(path, model=model, num_classes=source.num_classes,
                              input_size=image_size // downsample if (model and image_size) else None,
                              **({"in_channels": channels} if model else {}))
    resolution = pretrained.config["input_size"] * downsample
    if image_size is not None and image_size != resolution:
        raise UserError(f"the source model works at {resolution}px with autoencoder {autoencoder!r}, not {image_size}px; "
                        f"pass --image-size {resolution} (source.image_size in an experiment) or the matching source")
    if pretrained.config["in_channels"] != channels:
        raise UserError(f"the source model takes {pretrained.config['in_channels']} input channels but autoencoder "
                        f"{autoencoder!r} makes {channels}; pass the autoencoder it was trained with")
    num_classes = _dataset_classes(data)
    if settings.adapter is not None:  # a target the source lacks is one line before the probe runs
        adapter_modules(pretrained, settings.adapter.targets)
    if source.sanity_check and not (out.out_dir / "run.json").is_file():  # a resumed run was probed when it started
        device = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
                  if _on_gpu(launch.accelerator) and torch.cuda.is_available() else torch.device("cpu"))
        check_source(pretrained, path, data, resolution, autoencoder, device, split=settings.split)
    if settings.adapter is None:
        new = reheaded(pretrained, num_classes, seed=settings.seed)
    else:  # LoRA: the source itself, wrapped (one copy of its weights); its export is the adapter
        new = with_adapter(pretrained, num_classes, settings.adapter, seed=settings.seed)
    metadata = {"source": str(path), "source_sha256": cached_file_sha256(path), "source_num_classes": pretrained.num_classes}
    del pretrained  # the fine-tune has its own copy; the source's memory (2.7 GB for DiT-XL/2) goes back
    return train(NetworkToTrain(new, "finetune", autoencoder, resolution, metadata), data, out, settings, launch)


def pretrain(architecture: Union[ArchitectureSettings, str, dict], data: Union[TrainingSet, str, DatasetSpec],
             out: Union[RunOutput, str, Path], settings: Union[TrainSettings, dict, None] = None,
             launch: LaunchSettings = LaunchSettings(), autoencoder: str = "identity") -> Path:
    """Train a DiT from scratch on ``data`` (e.g. the 32x32 CIFAR-10 source model: ``"DiT-N/2"``, identity
    autoencoder). ``architecture``: an ArchitectureSettings, or its model alone (a name from
    ``benchmark.models.DiT_models`` or a dict of DiT arguments); input size, channels and classes follow the data.
    Returns ``<out_dir>/ema.pt``."""
    if not isinstance(architecture, ArchitectureSettings):
        architecture = ArchitectureSettings.parse({"model": architecture}, "pretrain")
    data, out = TrainingSet.of(data), RunOutput.of(out)
    settings = TrainSettings.parse(settings, "pretrain")
    if settings.adapter is not None:
        raise UserError("pretraining trains every weight from scratch; an adapter applies to fine-tunes only "
                        "(drop --adapter / pretrain.adapter)")
    downsample, channels = _autoencoder_geometry(autoencoder)
    image_size = architecture.image_size or get_spec(data.dataset).resolution
    if image_size % downsample:
        raise UserError(f"image size {image_size} is not a multiple of the autoencoder's downsampling {downsample}")
    num_classes = _dataset_classes(data)
    arch = dict(input_size=image_size // downsample, in_channels=channels, num_classes=num_classes,
                class_dropout_prob=settings.label_dropout, learn_sigma=architecture.learn_sigma)
    model = architecture.model
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
    return train(NetworkToTrain(network, "pretrain", autoencoder, image_size, {"model_name": name}), data, out,
                 settings, launch)
