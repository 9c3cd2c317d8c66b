"""Stage identities: the harness composes the identities each layer declares, and adds nothing of its own.

What a setting is to an output is declared once, on its field (``benchmark.settings.identity``): paths, worker
counts, batch sizes, checkpoint frequency, torch.compile, descriptions and the w selection rule are ``HOW`` (they
change how fast or where, not what) and nothing here lists them. Each layer turns its marks into one identity:

    training   source.identity() + finetune.identity()        the fine-tune (run.json: TrainSettings' without steps)
    sampling   SamplingSettings.identity_for(spec) + the resolved method's spec.identity()
               (sample folders: sampling.build.sampler_identity, with the checkpoints' hashes, without the count)
    metrics    EvaluationSettings.identity_for(n)              a sample set's scores (the metric caches)

and each stage's identity contains the one before it:

    latents (dataset, image size, autoencoder) < finetune (+ source model, fine-tune settings)
    < sample (+ method, w, seed, sampling settings) < evaluate (+ the evaluation of n images)

Each stage's output lands in a folder named by the hash of its identity (runs.csv's ``config_hash`` is the evaluate
stage's), so a rerun finds finished work, a changed setting makes new work beside the old, and nothing finished is
overwritten. A registered dataset is identified by its name (its content is fixed; the latent cache adds its
fingerprint); a user's own dataset also by the fingerprint of its files (names, sizes, modification times).
"""
from __future__ import annotations

from typing import Any, Optional

from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import UNGUIDED, RunSpec
from benchmark.io import config_hash

STAGES = ("latents", "finetune", "sample", "evaluate")


def latents_identity(exp: Experiment, dataset: str) -> dict:
    config: dict[str, Any] = {"dataset": dataset, "image_size": exp.source.image_size, "autoencoder": exp.autoencoder}
    if not isinstance(exp.dataset(dataset), str):  # a user's own folder: its name says nothing about its images
        config["data_fingerprint"] = exp.data_fingerprint(dataset)
    return config


def finetune_identity(exp: Experiment, dataset: str) -> dict:
    """The fine-tune's folder: a finished run of its steps (another number of steps is another folder)."""
    return {**latents_identity(exp, dataset), "source": exp.source.identity(), "finetune": exp.finetune.identity()}


def sample_identity(exp: Experiment, dataset: str, run: RunSpec) -> dict:
    """A sample set as the experiment describes it (before any checkpoint exists): the method's resolved spec, the
    seed and the sampling settings that change its images; extra guide models by where they come from."""
    config = {**finetune_identity(exp, dataset), **run.spec.identity(), "seed": int(run.seed),
              "sampling": exp.sampling.identity_for(run.spec)}
    if run.spec.guided and run.method != UNGUIDED:
        guides = {name: source.identity() for name, source in exp.entry(run.method).guides.items()}
        if guides:
            config["guides"] = guides
    return config


def evaluation_identity(exp: Experiment, num_samples: int) -> dict:
    """What the scores of a set of ``num_samples`` images depend on besides the images (the metric caches' key)."""
    return exp.evaluation.identity_for(num_samples)


def stage_config(exp: Experiment, stage: str, dataset: str, run: Optional[RunSpec] = None,
                 num_samples: Optional[int] = None) -> dict:
    """The identity of ``stage``'s output for ``dataset`` (and, from ``sample`` on, one sample set ``run``: method
    parameters and seed; for ``evaluate`` also the number of images scored)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if stage == "latents":
        return latents_identity(exp, dataset)
    if stage == "finetune":
        return finetune_identity(exp, dataset)
    if run is None:
        raise ValueError(f"stage {stage!r} needs a sample set (RunSpec)")
    config = sample_identity(exp, dataset, run)
    if stage == "evaluate":
        n = int(num_samples or exp.sampling.num_samples)
        config["evaluation"] = {**evaluation_identity(exp, n), "num_samples": n}
    return config


def stage_hash(exp: Experiment, stage: str, dataset: str, **kwargs) -> str:
    return config_hash(stage_config(exp, stage, dataset, **kwargs))
