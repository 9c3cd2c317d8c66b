"""The one way a sampler is made: from a ``SamplingSettings``, a method and w, the models and a device. The harness,
``dogbench sample`` and ``dogbench perf`` all call ``build_sampler``, so what perf times is what runs ship."""
from __future__ import annotations

from typing import Optional

import torch

from benchmark.diffusion import create_diffusion
from benchmark.guidance import GuidedDenoiser
from benchmark.models.dit import DiT
from benchmark.sampling.sampler import Sampler
from benchmark.sampling.settings import SamplingSettings


def is_guided(method: str, w: float) -> bool:
    """w = 1 is the unguided conditional prediction whatever the guide."""
    return method != "none" and float(w) != 1.0


def make_denoiser(method: str, w: float, finetuned: DiT, pretrained: Optional[DiT], settings: SamplingSettings) -> GuidedDenoiser:
    """fine-tune only (w ignored), CFG (guide: fine-tuned model, label K) or DoG (guide: pre-trained, its null)."""
    if not is_guided(method, w):
        return GuidedDenoiser(finetuned)
    if method == "cfg":
        if finetuned.y_embedder.embedding_table.num_embeddings <= finetuned.num_classes:
            raise ValueError("the fine-tuned model has no null-label row (trained without label dropout); CFG needs one")
        guide_model, null = finetuned, finetuned.null_label
    elif method == "dog":
        if pretrained is None:
            raise ValueError("DoG needs the pre-trained model; pass --pretrained CKPT")
        if pretrained.y_embedder.embedding_table.num_embeddings <= pretrained.num_classes:
            raise ValueError("the pre-trained model has no null-label row; DoG needs its unconditional branch")
        for key in ("input_size", "in_channels"):
            if pretrained.config[key] != finetuned.config[key]:
                raise ValueError(f"pre-trained and fine-tuned models differ in {key} ({pretrained.config[key]} vs "
                                 f"{finetuned.config[key]}); pass the source checkpoint of this fine-tune")
        guide_model, null = pretrained, pretrained.null_label
    else:
        raise ValueError(f"unknown method {method!r}; choose none, cfg or dog")
    return GuidedDenoiser(finetuned, guide_model, w, null, settings.guided_channels, settings.interval())


def compiled(model: DiT) -> DiT:
    """torch.compile'd forward, keeping the DiT's attributes (config, null_label) reachable."""
    model.forward = torch.compile(model.forward, dynamic=False)
    return model


def build_sampler(settings: SamplingSettings, method: str, w: float, seed: int, finetuned: DiT,
                  pretrained: Optional[DiT], autoencoder: torch.nn.Module, device: str | torch.device) -> Sampler:
    """The sampler of one sample set; the networks go to ``device`` in eval mode, compiled when the settings say."""
    device = torch.device(device)
    finetuned = finetuned.eval().requires_grad_(False).to(device)
    guided_by_pretrained = method == "dog" and is_guided(method, w)
    pretrained = pretrained.eval().requires_grad_(False).to(device) if guided_by_pretrained else None
    if settings.compiled_on(device.type):
        finetuned = compiled(finetuned)
        pretrained = compiled(pretrained) if pretrained is not None else None
    config = finetuned.config
    return Sampler(
        denoiser=make_denoiser(method, w, finetuned, pretrained, settings),
        diffusion=create_diffusion(str(settings.steps), learn_sigma=config["learn_sigma"]),
        autoencoder=autoencoder.to(device),
        latent_shape=(config["in_channels"], config["input_size"], config["input_size"]),
        num_classes=config["num_classes"],
        seed=seed,
        clip_denoised=settings.clip_denoised,
        device=device,
        precision=settings.precision,
        decode_precision=settings.decode_precision,
    )


def sampler_identity(settings: SamplingSettings, method: str, w: float, seed: int, *, finetuned_sha256: str,
                     pretrained_sha256: Optional[str], autoencoder: str) -> dict:
    """What determines the images, recorded in a sample folder's manifest (the sample count does not: sample i
    depends only on (seed, i)). w = 1 is the same images for every method, so it is keyed as method 'none'."""
    guided = is_guided(method, w)
    interval = settings.interval()
    return {
        "method": method if guided else "none",
        "w": float(w) if guided else 1.0,
        "finetuned_sha256": finetuned_sha256,
        "pretrained_sha256": pretrained_sha256 if guided and method == "dog" else None,
        "steps": settings.steps,
        "seed": int(seed),
        "guided_channels": settings.guided_channels if guided else None,
        "guidance_interval": [interval.low, interval.high] if guided and interval else None,
        "clip_denoised": settings.clip_denoised,
        "autoencoder": autoencoder,
        "precision": settings.precision,
        "decode_precision": settings.decode_precision,
    }
