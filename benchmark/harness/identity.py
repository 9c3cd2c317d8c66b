"""Stage identities: the settings that determine one stage's output, and nothing else.

Each stage's output lands in a folder named by the hash of its identity, so a rerun finds finished work, a changed
setting makes new work beside the old, and nothing finished is overwritten. Paths, worker counts, inference batch
sizes, checkpoint frequency, torch.compile, descriptions and the w selection rule are left out: they change how
fast or where, not what. Each stage contains the one before it:

    latents (dataset, image size, autoencoder) < finetune (+ source model, fine-tune settings)
    < sample (+ method, w, seed, sampling settings) < evaluate (+ metrics, reference split)

A registered dataset is identified by its name (its content is fixed; the latent cache adds its fingerprint); a
user's own dataset also by the fingerprint of its files (names, sizes, modification times).
"""
from __future__ import annotations

from typing import Any, Optional

from benchmark.harness.experiment import Experiment
from benchmark.harness.methods import UNGUIDED, RunSpec
from benchmark.io import config_hash

STAGES = ("latents", "finetune", "sample", "evaluate")
NOT_IDENTITY = {
    "finetune": ("num_workers", "checkpoint_every", "keep_ema_at"),  # how fast / what is saved, not what is learned
    "source": ("sanity_check",),                       # a check before the work, not what is learned
    "sampling": ("batch_size", "compile"),             # sample i depends only on (seed, i), not on its batch
    "sampling_unguided": ("guided_channels", "guidance_interval"),  # cannot change unguided samples
}


def stage_config(exp: Experiment, stage: str, dataset: str, run: Optional[RunSpec] = None,
                 num_samples: Optional[int] = None) -> dict:
    """The identity of ``stage``'s output for ``dataset`` (and, from ``sample`` on, one sample set ``run``: method
    parameters and seed; for ``evaluate`` also the number of images scored)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    config: dict[str, Any] = {"dataset": dataset, "image_size": exp.source.image_size, "autoencoder": exp.autoencoder}
    if not isinstance(exp.dataset(dataset), str):  # a user's own folder: its name says nothing about its images
        config["data_fingerprint"] = exp.data_fingerprint(dataset)
    if stage == "latents":
        return config
    finetune = {k: v for k, v in exp.finetune.to_dict().items() if k not in NOT_IDENTITY["finetune"]}
    source = {k: v for k, v in exp.source.to_dict().items() if k not in NOT_IDENTITY["source"]}
    config.update(source=source, finetune=finetune)
    if stage == "finetune":
        return config
    if run is None:
        raise ValueError(f"stage {stage!r} needs a sample set (RunSpec)")
    sampling = {k: v for k, v in exp.sampling.to_dict().items() if k not in NOT_IDENTITY["sampling"]}
    identity = run.spec.identity()  # none / cfg / dog: {"method", "w"} as they always were; others add params
    if identity["method"] == UNGUIDED:
        for key in NOT_IDENTITY["sampling_unguided"]:
            sampling.pop(key)
    elif run.spec.interval is not None and exp.sampling.guidance_interval is None:
        sampling["guidance_interval"] = [run.spec.interval.low, run.spec.interval.high]  # the method's own
    config.update(**identity, seed=int(run.seed), sampling=sampling)
    if identity["method"] != UNGUIDED and run.method != UNGUIDED:
        guides = {name: source.to_dict() for name, source in exp.entry(run.method).guides.items()}
        if guides:
            config["guides"] = guides
    if stage == "sample":
        return config
    e = exp.evaluation
    n = int(num_samples or exp.sampling.num_samples)
    config["evaluation"] = {"metrics": list(e.metrics), "ref_split": e.ref_split, "num_samples": n,
                            "max_images": e.max_images(n)}
    return config


def stage_hash(exp: Experiment, stage: str, dataset: str, **kwargs) -> str:
    return config_hash(stage_config(exp, stage, dataset, **kwargs))
