"""The one way a sampler is made: from a ``SamplingSettings``, a guidance method spec (``benchmark.guidance``), the
models and a device. The harness, ``dogbench sample`` and ``dogbench perf`` all call ``build_sampler``, so what perf
times is what runs ship.

Models by name: ``finetuned`` (always), ``pretrained`` (the source, DoG's guide) and any extra checkpoint a method's
guide names (``guides``, e.g. autoguidance's ``weak``: an earlier step of the fine-tune). Only the models the spec's
active guides need are moved to the device, compiled and recorded in the sample identity.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from benchmark.diffusion import create_diffusion
from benchmark.errors import ConfigError
from benchmark.guidance import FINETUNED, PRETRAINED, GuidedDenoiser, MethodSpec
from benchmark.models.dit import DiT
from benchmark.sampling.sampler import Sampler
from benchmark.sampling.settings import GUIDED, SamplingSettings
from benchmark.settings import AMOUNT, FOLDED, identity_role


def _has_null_row(model: DiT) -> bool:
    return model.y_embedder.embedding_table.num_embeddings > model.num_classes


def _missing_model(spec: MethodSpec, name: str) -> str:
    if name == PRETRAINED:
        return f"{spec.describe()} needs the pre-trained model; pass --pretrained CKPT (the source model)"
    return (f"{spec.describe()} needs the guide checkpoint {name!r}; pass --guide-checkpoint {name}=PATH "
            f"(e.g. an earlier EMA export of the fine-tune, ema-stepN.pt)")


def spec_models(spec: MethodSpec, finetuned: DiT, pretrained: Optional[DiT] = None,
                guides: Optional[Mapping[str, DiT]] = None) -> dict[str, DiT]:
    """The models ``spec`` runs, by name, checked against the fine-tune: present, with a null-label row where they
    are called with their null label, the same latent geometry, and the fine-tune's classes where they are called
    with the sample's class. One-line ValueErrors name the fix."""
    available = {FINETUNED: finetuned, PRETRAINED: pretrained, **(guides or {})}
    models = {}
    for name in spec.models():
        model = available.get(name)
        if model is None:
            raise ValueError(_missing_model(spec, name))
        labels = {g.label for g in spec.active_guides if g.model == name}
        if "null" in labels and not _has_null_row(model):
            which = "fine-tuned model" if name == FINETUNED else f"{name} model"
            raise ValueError(f"the {which} has no null-label row (trained without label dropout); "
                             f"{spec.name} needs its unconditional branch")
        if name != FINETUNED:
            for key in ("input_size", "in_channels"):
                if model.config[key] != finetuned.config[key]:
                    fix = ("pass the source checkpoint of this fine-tune" if name == PRETRAINED
                           else "pass a checkpoint of this fine-tune")
                    raise ValueError(f"{name} and fine-tuned models differ in {key} ({model.config[key]} vs "
                                     f"{finetuned.config[key]}); {fix}")
            if labels & {"cond", "random"} and model.num_classes != finetuned.num_classes:
                raise ValueError(f"the {name} model has {model.num_classes} classes and the fine-tune "
                                 f"{finetuned.num_classes}; {spec.name} calls it with the fine-tune's classes: "
                                 f"pass a checkpoint of this fine-tune")
        models[name] = model
    return models


def make_denoiser(spec: MethodSpec, models: Mapping[str, DiT], settings: SamplingSettings,
                  alphas_cumprod=None) -> GuidedDenoiser:
    """The guided denoiser of ``spec`` over ``models`` (from ``spec_models``), guiding ``settings.guided_channels``;
    ``alphas_cumprod`` by training timestep (APG needs it)."""
    return GuidedDenoiser(spec, models, guided_channels=settings.guided_channels, alphas_cumprod=alphas_cumprod)


def compiled(model: DiT) -> DiT:
    """torch.compile'd forward, keeping the DiT's attributes (config, null_label) reachable."""
    model.forward = torch.compile(model.forward, dynamic=False)
    return model


def _check_interval(settings: SamplingSettings, spec: MethodSpec) -> None:
    """The interval is the method's parameter; a sampling setting that says otherwise would be silently ignored."""
    if spec.guided and settings.guidance_interval is not None and spec.interval != settings.interval():
        raise ConfigError(f"the sampling guidance_interval {settings.guidance_interval} and {spec.describe()}'s "
                          f"interval differ; give the interval once (method_spec puts the setting into the method)")


def build_sampler(settings: SamplingSettings, method: MethodSpec, seed: int, finetuned: DiT,
                  pretrained: Optional[DiT], autoencoder: torch.nn.Module, device: str | torch.device,
                  guides: Optional[Mapping[str, DiT]] = None) -> Sampler:
    """The sampler of one sample set; the networks the method needs go to ``device`` in eval mode, compiled when the
    settings say. ``guides``: extra checkpoints by name (autoguidance's ``weak``)."""
    _check_interval(settings, method)
    device = torch.device(device)
    models = spec_models(method, finetuned, pretrained, guides)
    for name, model in models.items():
        model = model.eval().requires_grad_(False).to(device)
        models[name] = compiled(model) if settings.compiled_on(device.type) else model
    config = finetuned.config
    diffusion = create_diffusion(str(settings.steps), learn_sigma=config["learn_sigma"])
    return Sampler(
        denoiser=make_denoiser(method, models, settings, diffusion.original_alphas_cumprod),
        diffusion=diffusion,
        autoencoder=autoencoder.to(device),
        latent_shape=(config["in_channels"], config["input_size"], config["input_size"]),
        num_classes=config["num_classes"],
        seed=seed,
        clip_denoised=settings.clip_denoised,
        device=device,
        precision=settings.precision,
        decode_precision=settings.decode_precision,
    )


def sampler_identity(settings: SamplingSettings, method: MethodSpec, seed: int, *, finetuned_sha256: str,
                     pretrained_sha256: Optional[str], autoencoder: str,
                     guide_sha256: Optional[Mapping[str, str]] = None, classes: Optional[Sequence[int]] = None) -> dict:
    """What determines the images, recorded in a sample folder's manifest and hashed into its name: the method's
    identity (an unguided spec is the same images for every method: 'none'; a user's method adds its source and
    code hash), the checkpoints it runs, the seed, the autoencoder, and every sampling setting marked as changing the
    images (``SamplingSettings.identity_for``; not the sample count: sample i depends only on (seed, i), so a folder
    extends). ``classes``: the labels drawn from, when not all of the fine-tune's."""
    _check_interval(settings, method)
    extra = [name for name in method.models() if name not in (FINETUNED, PRETRAINED)]
    missing = [name for name in extra if not (guide_sha256 or {}).get(name)]
    if missing:
        raise ValueError(f"sampler_identity: {method.describe()} needs the sha256 of guide checkpoint(s) {missing}")
    # an unguided set records its guided-only settings as null (so folders made before keep their names)
    unguided = {name: None for name, field in type(settings).model_fields.items()
                if identity_role(field) in (GUIDED, FOLDED)}
    out = {
        **method.identity(),
        "finetuned_sha256": finetuned_sha256,
        "pretrained_sha256": pretrained_sha256 if PRETRAINED in method.models() else None,
        "seed": int(seed),
        "autoencoder": autoencoder,
        **unguided,
        **settings.identity_for(method, AMOUNT),
    }
    if extra:
        out["guide_sha256"] = {name: guide_sha256[name] for name in extra}
    if classes is not None:  # other labels, other images; absent otherwise, so earlier folders keep their identity
        out["classes"] = list(classes)
    return out
