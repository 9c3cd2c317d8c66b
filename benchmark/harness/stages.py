"""The benchmark's stages for one dataset: prepare -> latents -> finetune -> sample -> evaluate.

Every stage's output carries a manifest keyed by the config that produced it (``benchmark.harness.identity``: the
identities each layer declares, plus the hashes of its inputs). A rerun skips finished work, resumes unfinished work
(fine-tuning from its last checkpoint, sampling from the missing images), and redoes work whose config changed (it
lands in a new folder, named by the config's hash, so nothing finished is overwritten).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional


from benchmark.claims import claim
from benchmark.data import get_dataset
from benchmark.distributed import barrier, local_world, main_writes, rank_world
from benchmark.errors import UserError
from benchmark.data.latents import build_latent_cache, cache_for
from benchmark.guidance import FINETUNED, PRETRAINED
from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import RunSpec, snapshot_steps
from benchmark.harness.identity import evaluation_identity, stage_config
from benchmark.harness.wandb_log import finetune_wandb_run
from benchmark.io import atomic_write_json, cached_file_sha256, config_hash, read_json
from benchmark.metrics import evaluate_samples
from benchmark.metrics.evaluate import real_control_images
from benchmark.metrics.card import CardFiles, SampleSetCard
from benchmark.metrics.registry import METRICS, NOT_ON_REAL_IMAGES
from benchmark.models import load_autoencoder, load_dit, resolve_checkpoint
from benchmark.sampling import SampleFolder, build_sampler, generate_samples, sampler_identity
from benchmark.training import LaunchSettings, RunOutput, TrainingSet, finetune
from benchmark.training.callbacks import ema_snapshot_path

DONE = "done.json"


def log(message: str) -> None:
    """A progress line, from rank 0 only (every rank does the same step)."""
    if rank_world()[0] == 0:
        print(f"[dogbench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class DatasetContext:
    """What the stages of one dataset share: paths, the loaded models, the device."""

    exp: Experiment
    dataset: str
    results_dir: Path
    device: str
    progress: bool = True
    finetuned_path: Optional[Path] = None
    variant: str = ""  # the fine-tune variant's name (benchmark/harness/finetunes.py); "" for one fine-tune
    _models: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.results_dir / self.dataset

    @property
    def data(self):
        """What ``get_dataset`` reads: the registry name, or the spec of the user's own dataset."""
        return self.exp.dataset(self.dataset)

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
            if which == "finetuned":  # a LoRA export is rebuilt on the experiment's source (checked by sha256)
                self._models[which] = load_dit(self.finetuned_path, base=self.exp.source_checkpoint())
            elif self.exp.finetune.adapter is not None:  # LoRA: DoG's guide is the same weights with the adapter off
                self._models[which] = self.model("finetuned").source_view()
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
    train = get_dataset(ctx.data, split="train", root=ctx.exp.data_dir())
    return train.num_classes


def claimed(unit: Path, what: str, wait: bool = True):
    """The claim on a unit of work for this process (benchmark.claims), so that several ``dogbench run`` processes on
    one results folder share the work. Ranks of one torchrun job work together: they take no claims."""
    return claim(unit, what, wait=wait) if rank_world()[1] == 1 else contextlib.nullcontext(True)


def missing(what: str, stage: str) -> UserError:
    return UserError(f"{what} is missing; add '{stage}' to --stages (or pass --until with a later stage)")


def stage_latents(ctx: DatasetContext, run: bool = True) -> Optional[Path]:
    """Pre-encode the training images (both flips) with the VAE, each process a share of the chunks; pixel-space
    experiments skip this. With ``run=False`` only check that the cache is complete."""
    if ctx.exp.autoencoder == "identity":
        return None
    images = get_dataset(ctx.data, split=ctx.exp.finetune.split, root=ctx.exp.data_dir())
    cache = cache_for(images, ctx.autoencoder(), ctx.exp.source.image_size, ctx.cache_root / "latents")
    if not run:
        if not cache.complete:
            raise missing(f"{ctx.dataset}: the latent cache {cache.root}", "latents")
        return cache.root
    with claimed(cache.root, f"the latent cache of {ctx.dataset}"):
        if not cache.complete:
            log(f"{ctx.dataset}: encoding {len(images)} {ctx.exp.finetune.split} images (and their mirror images) with "
                f"{ctx.exp.autoencoder} -> {cache.root}")
        return build_latent_cache(images, ctx.autoencoder(), ctx.exp.source.image_size, ctx.cache_root / "latents",
                                  num_workers=ctx.exp.finetune.num_workers, device=ctx.device, progress=ctx.progress)


def stage_finetune(ctx: DatasetContext, run: bool = True) -> Path:
    """Fine-tune the source model on the dataset (resuming from the last checkpoint); returns the EMA export.
    With ``run=False`` only find a finished fine-tune."""
    key = config_hash(stage_config(ctx.exp, "finetune", ctx.dataset))
    out = ctx.dir / f"finetune-{key}"
    done = read_json(out / DONE)
    if done and (out / done["ema"]).exists():
        ctx.finetuned_path = out / done["ema"]
        log(f"{ctx.dataset}: fine-tune {key} already done")
        return ctx.finetuned_path
    if not run:
        raise missing(f"{ctx.dataset}: the fine-tune {out}", "finetune")
    with claimed(out, f"the fine-tune of {ctx.dataset}"):  # another process may be training it: wait for it
        done = read_json(out / DONE)
        if done and (out / done["ema"]).exists():
            ctx.finetuned_path = out / done["ema"]
            return ctx.finetuned_path
        return _finetune(ctx, out)


def _finetune(ctx: DatasetContext, out: Path) -> Path:
    log(f"{ctx.dataset}: fine-tuning {ctx.exp.source.checkpoint} for {ctx.exp.finetune.steps} steps -> {out}")
    _, world = rank_world()
    # one process: one device; under torchrun every process trains, in the process group it already joined
    launch = LaunchSettings(strategy=ctx.exp.launch.strategy, devices=local_world() if world > 1 else 1,
                            num_nodes=max(1, world // local_world()))
    ema = finetune(
        ctx.exp.source.replaced(checkpoint=ctx.exp.source_checkpoint()),
        TrainingSet(ctx.data, ctx.exp.data_dir(), ctx.cache_root / "latents"),
        RunOutput(out, wandb=ctx.exp.tracking.wandb, progress=ctx.progress,
                  wandb_run=finetune_wandb_run(ctx.exp, ctx.dataset, ctx.results_dir, ctx.variant)),
        # the EMA snapshots the methods guide with (autoguidance) are kept while training
        ctx.exp.finetune.replaced(keep_ema_at=sorted(set(ctx.exp.finetune.keep_ema_at)
                                                     | set(snapshot_steps(ctx.exp.method_entries())))),
        launch,
        ctx.exp.autoencoder_spec(),
    )
    barrier()  # rank 0 has written the export before anyone records or reads it
    with main_writes() as mine:
        if mine:
            atomic_write_json(out / DONE, {"config": stage_config(ctx.exp, "finetune", ctx.dataset),
                                           "ema": Path(ema).name})
    ctx.finetuned_path = Path(ema)
    return ctx.finetuned_path


def guide_paths(ctx: DatasetContext, run: RunSpec) -> dict[str, Path]:
    """The extra guide checkpoints of a sample set (autoguidance's weak model), by model name: an EMA snapshot of
    this fine-tune or a file the experiment names."""
    paths = {}
    for name in (m for m in run.spec.models() if m not in (FINETUNED, PRETRAINED)):
        source = ctx.exp.entry(run.method).guides[name]
        if source.path is not None:
            path = ctx.exp.resolve(source.path)
            if not path.is_file():
                raise UserError(f"method {run.method}: guide {name} checkpoint {path} does not exist; fix guides.{name}.path")
        else:
            path = ema_snapshot_path(ctx.finetuned_path.parent, source.step)
            if not path.is_file():
                raise UserError(f"method {run.method}: the fine-tune {ctx.finetuned_path.parent} has no EMA snapshot at "
                                f"step {source.step} (it was trained before that was asked for); delete that folder to "
                                f"fine-tune again with it, or pick a step it has")
        paths[name] = path
    return paths


def sample_folder(ctx: DatasetContext, run: RunSpec, num_samples: Optional[int] = None) -> SampleFolder:
    identity = sampler_identity(
        ctx.exp.sampling, run.spec, run.seed, finetuned_sha256=cached_file_sha256(ctx.finetuned_path),
        pretrained_sha256=ctx.pretrained_sha256() if PRETRAINED in run.spec.models() else None,
        autoencoder=ctx.exp.autoencoder,
        guide_sha256={name: cached_file_sha256(path) for name, path in guide_paths(ctx, run).items()})
    name = f"{run.spec.slug()}-seed{run.seed}-{config_hash(identity, 8)}"
    return SampleFolder(ctx.dir / "samples" / name, num_samples or ctx.exp.sampling.num_samples, identity)


def stage_sample(ctx: DatasetContext, spec: RunSpec, num_samples: Optional[int] = None, run: bool = True) -> SampleFolder:
    """Make (or finish) the samples of one (method, w, seed); this rank makes its share. With ``run=False`` only
    find the finished folder."""
    with main_writes() as mine:  # rank 0 creates the folder's manifest, the others find it
        if mine:
            sample_folder(ctx, spec, num_samples).open()
    folder = sample_folder(ctx, spec, num_samples).open()
    rank, world = rank_world()
    if not folder.missing():
        return folder
    if not run:
        raise missing(f"{ctx.dataset}: samples {folder.root.name} ({len(folder.missing())} of {folder.num_samples})",
                      "sample")
    s = ctx.exp.sampling
    pretrained = ctx.model(PRETRAINED) if PRETRAINED in spec.spec.models() else None
    guides = {name: load_dit(path) for name, path in guide_paths(ctx, spec).items()}
    sampler = build_sampler(s, spec.spec, spec.seed, ctx.model(FINETUNED), pretrained, ctx.autoencoder(), ctx.device,
                            guides)
    log(f"{ctx.dataset}: sampling {spec.spec.describe()} seed={spec.seed} ({len(folder.missing(rank, world))} images)")
    generate_samples(sampler, folder, s.batch_size, rank, world, progress=ctx.progress)
    with main_writes() as mine:  # every rank's share is on disk before the set is marked complete
        if mine:
            folder.mark_complete()
    return folder


def _metrics_key(exp: Experiment, identity: dict, n: int) -> dict:
    """The metric cache's key: the scored images (the sample folder's identity, or the real control's) and the
    evaluation of ``n`` of them."""
    return {"evaluation": evaluation_identity(exp, n), "num_samples": n, "samples": identity}


def _evaluate_cached(ctx: DatasetContext, images, root: Path, identity: dict, n: int, what: str, labels=None,
                     metrics: Optional[list] = None) -> dict:
    """evaluate_samples on ``images`` (``labels``: their classes, for the class KID), its result cached in ``root``
    by the evaluation config (and the sample features cached there too, so every interval is computed without the
    networks). ``metrics``: the experiment's, or those of them that apply to the images."""
    e = ctx.exp.evaluation
    metrics = list(e.metrics if metrics is None else metrics)
    key = _metrics_key(ctx.exp, identity, n)
    path = root / f"metrics-{config_hash(key, 8)}.json"
    cached = read_json(path)
    if cached and cached.get("key") == key:
        return cached["metrics"]
    log(f"{ctx.dataset}: evaluating {what} on {n} images ({', '.join(metrics)})")
    # every rank extracts the features of its share; the statistics are combined across ranks. The copy rate's
    # "train" is the split this experiment fine-tuned on, its "held out" the rest (benchmark.metrics.realsets).
    result = evaluate_samples(images, ctx.data, metrics, ref_split=e.ref_split, data_root=ctx.exp.data_dir(),
                              labels=labels, train_split=ctx.exp.finetune.split,
                              batch_size=e.batch_size, device=ctx.device, max_images=e.max_images(n),
                              cache_dir=ctx.cache_root / "reference",  # shared by experiments
                              features_dir=root, progress=ctx.progress, **ctx.exp.weight_paths())
    with main_writes() as mine:
        if mine:
            atomic_write_json(path, {"key": key, "metrics": result})
    return result


def stage_evaluate(ctx: DatasetContext, spec: RunSpec, folder: SampleFolder, num_samples: Optional[int] = None) -> dict:
    """Metrics of the first ``num_samples`` images of a sample folder, cached beside them by evaluation config."""
    n = num_samples or ctx.exp.sampling.num_samples
    # only a complete set whose every image decodes and matches its recorded hash is scored
    images = folder.verified_paths(n, command="dogbench run", allow_flag=None)  # run's advice, not sample's flags
    labels = folder.labels()[:n]  # the class each sample was drawn for (the class KID scores per class)
    return _evaluate_cached(ctx, images, folder.root, folder.config, n,
                            f"{spec.spec.describe()} seed={spec.seed}", labels if (labels >= 0).all() else None)


def stage_real_control(ctx: DatasetContext, num_samples: int, seed: int) -> tuple[dict, Path]:
    """The real-data floor: ``num_samples`` real target images (a seeded subset of ``real_control_split``) scored
    exactly like a sample set. Returns (the evaluation result, the folder holding its cached features)."""
    subset, drawn = real_control_images(ctx.data, num_samples, seed, ctx.exp.evaluation.ref_split,
                                        ctx.exp.data_dir())
    split = drawn["split"]
    identity = {"real": ctx.dataset, "split": split, "fingerprint": drawn["fingerprint"], "seed": seed,
                "num_samples": num_samples}
    root = ctx.dir / "controls" / f"real-{split}-seed{seed}-{config_hash(identity, 8)}"
    root.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in ctx.exp.evaluation.metrics if METRICS[m].kind not in NOT_ON_REAL_IMAGES]
    with claimed(root, f"the real-data control of {ctx.dataset}"):  # the subset carries its labels (class KID)
        return _evaluate_cached(ctx, subset, root, identity, num_samples, f"real images ({split} split)",
                                metrics=metrics), root


def scored_sets(exp: Experiment, results_dir: Path, cache_root: Path) -> Callable[[Mapping], SampleSetCard]:
    """The metric card of a runs.csv row's sample set (its ``sample_dir`` and ``num_samples``), each loaded once: what
    its evaluation under the experiment's evaluation settings cached beside the samples (features, labels, and the
    names of its reference statistics and split features in ``cache_root``)."""
    files = CardFiles(cache_root / "reference")
    loaded: dict[tuple, SampleSetCard] = {}

    def scored(row: Mapping) -> SampleSetCard:
        folder, n = results_dir / str(row["sample_dir"]), int(row["num_samples"])
        if (folder, n) not in loaded:
            evaluation = evaluation_identity(exp, n)
            found = [r["metrics"] for p in sorted(folder.glob("metrics-*.json")) if (r := read_json(p))
                     and r.get("key", {}).get("num_samples") == n and r["key"].get("evaluation") == evaluation]
            if not found:
                raise FileNotFoundError(f"no metrics of {n} images in {folder}; rerun `dogbench run` to evaluate it")
            result = found[-1]  # the card of the metrics it was scored on (a real control has no copy rate)
            loaded[(folder, n)] = files.card(result, folder, [m for m in exp.evaluation.metrics
                                                               if m in result["protocol"]])
        return loaded[(folder, n)]
    return scored
