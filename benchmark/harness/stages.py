"""The benchmark's stages for one dataset: prepare -> latents -> finetune -> sample -> evaluate.

Every stage's output carries a manifest keyed by the config that produced it (``Experiment.stage_config`` plus the
hashes of its inputs). A rerun skips finished work, resumes unfinished work (fine-tuning from its last checkpoint,
sampling from the missing images), and redoes work whose config changed (it lands in a new folder, named by the
config's hash, so nothing finished is overwritten).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from benchmark.data import get_dataset
from benchmark.data.latents import build_latent_cache
from benchmark.harness.experiment import Experiment, RunSpec
from benchmark.harness.identity import stage_config
from benchmark.io import atomic_write_json, cached_file_sha256, config_hash, read_json
from benchmark.metrics import evaluate_samples
from benchmark.models import load_autoencoder, load_dit, resolve_checkpoint
from benchmark.sampling import SampleFolder, build_sampler, generate_samples, method_point, sampler_identity
from benchmark.training import finetune

DONE = "done.json"


def log(message: str) -> None:
    print(f"[dogbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun / Lightning's launcher, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the process group and take this rank's GPU. Sampling then shards
    sample indices across ranks (i % world == rank); rank 0 evaluates and reports."""
    rank, world = distributed()
    if world <= 1:
        return device
    cuda = str(device).startswith("cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


@dataclass
class DatasetContext:
    """What the stages of one dataset share: paths, the loaded models, the device."""

    exp: Experiment
    dataset: str
    results_dir: Path
    device: str
    progress: bool = True
    finetuned_path: Optional[Path] = None
    _models: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.results_dir / self.dataset

    @property
    def cache_root(self) -> Path:
        """Caches shared by every experiment under the same results root (latents, reference statistics)."""
        return self.results_dir.parent / "cache"

    def pretrained_sha256(self) -> str:
        """The source checkpoint's hash, without loading the model (a finished sample set needs no model)."""
        return cached_file_sha256(resolve_checkpoint(self.exp.source_checkpoint(), download=False))

    def model(self, which: str):
        """The fine-tuned ('finetuned') or pre-trained ('pretrained') DiT, loaded once."""
        if which not in self._models:
            if which == "finetuned":
                self._models[which] = load_dit(self.finetuned_path)
            else:
                src = self.exp.source
                named = {"in_channels": self.latent_channels()} if isinstance(src.model, str) else {}
                self._models[which] = load_dit(self.exp.source_checkpoint(), model=src.model,
                                               num_classes=src.num_classes, input_size=self.latent_size(), **named)
        return self._models[which]

    def latent_size(self) -> int:
        return self.exp.source.image_size // self.autoencoder().downsample

    def latent_channels(self) -> int:
        return self.autoencoder().latent_channels()

    def autoencoder(self):
        if "autoencoder" not in self._models:
            self._models["autoencoder"] = load_autoencoder(self.exp.autoencoder_spec(), device=self.device)
        return self._models["autoencoder"]


def stage_prepare(ctx: DatasetContext) -> int:
    """Check that the dataset is in place (a missing one is a one-line error naming `dogbench prepare`)."""
    train = get_dataset(ctx.dataset, split="train", root=ctx.exp.data_dir())
    return train.num_classes


def stage_latents(ctx: DatasetContext) -> Optional[Path]:
    """Pre-encode the training images (both flips) with the VAE; pixel-space experiments skip this."""
    if ctx.exp.autoencoder == "identity":
        return None
    return build_latent_cache(ctx.dataset, split=ctx.exp.finetune.split, resolution=ctx.exp.source.image_size,
                              autoencoder=ctx.autoencoder(), data_root=ctx.exp.data_dir(),
                              cache_dir=ctx.cache_root / "latents", device=ctx.device, progress=ctx.progress)


def stage_finetune(ctx: DatasetContext) -> Path:
    """Fine-tune the source model on the dataset (resuming from the last checkpoint); returns the EMA export."""
    key = config_hash(stage_config(ctx.exp, "finetune", ctx.dataset))
    out = ctx.dir / f"finetune-{key}"
    done = read_json(out / DONE)
    if done and (out / done["ema"]).exists():
        ctx.finetuned_path = out / done["ema"]
        log(f"{ctx.dataset}: fine-tune {key} already done")
        return ctx.finetuned_path
    log(f"{ctx.dataset}: fine-tuning {ctx.exp.source.checkpoint} for {ctx.exp.finetune.steps} steps -> {out}")
    ema = finetune(
        source=ctx.exp.source_checkpoint(),
        dataset=ctx.dataset,
        out_dir=out,
        settings=ctx.exp.finetune,
        source_model=ctx.exp.source.model,
        source_num_classes=ctx.exp.source.num_classes,
        image_size=ctx.exp.source.image_size,
        autoencoder=ctx.exp.autoencoder_spec(),
        data_root=ctx.exp.data_dir(),
        latent_cache_dir=ctx.cache_root / "latents",
        wandb=ctx.exp.tracking.wandb,
        progress=ctx.progress,
    )
    atomic_write_json(out / DONE, {"config": stage_config(ctx.exp, "finetune", ctx.dataset), "ema": Path(ema).name})
    ctx.finetuned_path = Path(ema)
    return ctx.finetuned_path


def sample_folder(ctx: DatasetContext, spec: RunSpec, num_samples: Optional[int] = None) -> SampleFolder:
    identity = sampler_identity(
        ctx.exp.sampling, method_point(spec.method, spec.w, ctx.exp.sampling), spec.seed,
        finetuned_sha256=cached_file_sha256(ctx.finetuned_path),
        pretrained_sha256=ctx.pretrained_sha256() if spec.method == "dog" else None, autoencoder=ctx.exp.autoencoder)
    name = f"{identity['method']}-w{identity['w']:g}-seed{spec.seed}-{config_hash(identity, 8)}"
    return SampleFolder(ctx.dir / "samples" / name, num_samples or ctx.exp.sampling.num_samples, identity)


def stage_sample(ctx: DatasetContext, spec: RunSpec, num_samples: Optional[int] = None) -> SampleFolder:
    """Make (or finish) the samples of one (method, w, seed); this rank makes its share."""
    folder = sample_folder(ctx, spec, num_samples).open()
    rank, world = distributed()
    if not folder.missing(rank, world):
        folder.mark_complete()
        return folder
    s = ctx.exp.sampling
    pretrained = ctx.model("pretrained") if spec.method == "dog" else None
    sampler = build_sampler(s, method_point(spec.method, spec.w, s), spec.seed, ctx.model("finetuned"), pretrained,
                            ctx.autoencoder(), ctx.device)
    log(f"{ctx.dataset}: sampling {spec.method} w={spec.w:g} seed={spec.seed} ({len(folder.missing(rank, world))} images)")
    generate_samples(sampler, folder, s.batch_size, rank, world, progress=ctx.progress)
    barrier()
    folder.mark_complete()
    return folder


def stage_evaluate(ctx: DatasetContext, spec: RunSpec, folder: SampleFolder, num_samples: Optional[int] = None) -> dict:
    """Metrics of the first ``num_samples`` images of a sample folder, cached beside them by evaluation config."""
    n = num_samples or ctx.exp.sampling.num_samples
    e = ctx.exp.evaluation
    key = {"evaluation": {"metrics": list(e.metrics), "ref_split": e.ref_split}, "num_samples": n,
           "samples": folder.config}
    path = folder.root / f"metrics-{config_hash(key, 8)}.json"
    cached = read_json(path)
    if cached and cached.get("key") == key:
        return cached["metrics"]
    log(f"{ctx.dataset}: evaluating {spec.method} w={spec.w:g} seed={spec.seed} on {n} images ({', '.join(e.metrics)})")
    result = evaluate_samples(folder.image_paths()[:n], ctx.dataset, e.metrics, ref_split=e.ref_split,
                              data_root=ctx.exp.data_dir(), batch_size=e.batch_size, device=ctx.device,
                              cache_dir=ctx.cache_root / "reference", progress=ctx.progress)  # shared by experiments
    atomic_write_json(path, {"key": key, "metrics": result})
    return result
