"""Build the sampler for a method (none / cfg / dog) and fill a sample folder with it."""
from __future__ import annotations

import os
from typing import Optional

import torch
from tqdm.auto import tqdm

from benchmark.diffusion import create_diffusion
from benchmark.guidance import DEFAULT_GUIDED_CHANNELS, GuidanceInterval, GuidedDenoiser, check_guidance_scale
from benchmark.io import cached_file_sha256
from benchmark.models.dit import DiT
from benchmark.sampling.sampler import Sampler
from benchmark.sampling.writer import SampleFolder


def checkpoint_sha256(path: str | os.PathLike) -> str:
    return cached_file_sha256(path)


def compiled(model: DiT) -> DiT:
    """torch.compile'd forward, keeping the DiT's attributes (config, null_label) reachable."""
    model.forward = torch.compile(model.forward, dynamic=False)
    return model


def make_denoiser(method: str, finetuned: DiT, pretrained: Optional[DiT], w: float,
                  guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS,
                  interval: Optional[GuidanceInterval] = None) -> GuidedDenoiser:
    """fine-tune only (w ignored), CFG (guide: fine-tuned model, label K) or DoG (guide: pre-trained, its null)."""
    w = check_guidance_scale(w)
    if method == "none" or w == 1.0:
        return GuidedDenoiser(finetuned)
    if method == "cfg":
        if finetuned.y_embedder.embedding_table.num_embeddings <= finetuned.num_classes:
            raise ValueError("the fine-tuned model has no null-label row (trained without label dropout); CFG needs one")
        return GuidedDenoiser(finetuned, finetuned, w, finetuned.null_label, guided_channels, interval)
    if method == "dog":
        if pretrained is None:
            raise ValueError("DoG needs the pre-trained model; pass --pretrained CKPT")
        if pretrained.y_embedder.embedding_table.num_embeddings <= pretrained.num_classes:
            raise ValueError("the pre-trained model has no null-label row; DoG needs its unconditional branch")
        for key in ("input_size", "in_channels"):
            if pretrained.config[key] != finetuned.config[key]:
                raise ValueError(f"pre-trained and fine-tuned models differ in {key} "
                                 f"({pretrained.config[key]} vs {finetuned.config[key]}); pass the source checkpoint of this fine-tune")
        return GuidedDenoiser(finetuned, pretrained, w, pretrained.null_label, guided_channels, interval)
    raise ValueError(f"unknown method {method!r}; choose none, cfg or dog")


def build_sampler(method: str, finetuned: DiT, pretrained: Optional[DiT], w: float, autoencoder, *, steps: int = 50,
                  seed: int = 0, guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS,
                  interval: Optional[GuidanceInterval] = None, clip_denoised: bool = False,
                  device: str | torch.device = "cpu", precision: str = "fp32", compile: bool = False) -> Sampler:
    """``precision="bf16"`` runs the networks under bf16 autocast (the diffusion arithmetic stays fp32);
    ``compile`` wraps them in torch.compile (worth it for thousands of samples on a GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what the reference's fp32 path runs at, too
        torch.backends.cudnn.allow_tf32 = True
    finetuned = finetuned.eval().requires_grad_(False).to(device)
    if pretrained is not None:
        pretrained = pretrained.eval().requires_grad_(False).to(device)
    cfg = finetuned.config
    if compile:
        finetuned, pretrained = compiled(finetuned), compiled(pretrained) if pretrained is not None else None
    denoiser = make_denoiser(method, finetuned, pretrained, w, guided_channels, interval)
    return Sampler(
        denoiser=denoiser,
        diffusion=create_diffusion(str(steps), learn_sigma=cfg["learn_sigma"]),
        autoencoder=autoencoder.to(device),
        latent_shape=(cfg["in_channels"], cfg["input_size"], cfg["input_size"]),
        num_classes=cfg["num_classes"],
        seed=seed,
        clip_denoised=clip_denoised,
        device=device,
        precision=precision,
    )


def sampling_config(method: str, w: float, *, finetuned_sha256: str, pretrained_sha256: Optional[str], steps: int,
                    seed: int, guided_channels: Optional[int], interval: Optional[GuidanceInterval],
                    clip_denoised: bool, autoencoder: str, precision: str) -> dict:
    """What determines the images (the sample count does not: sample i depends only on (seed, i)).
    w = 1 is the same images for every method, so it is keyed as method 'none'."""
    guided = method != "none" and float(w) != 1.0
    return {
        "method": method if guided else "none",
        "w": float(w) if guided else 1.0,
        "finetuned_sha256": finetuned_sha256,
        "pretrained_sha256": pretrained_sha256 if guided and method == "dog" else None,
        "steps": int(steps),
        "seed": int(seed),
        "guided_channels": guided_channels if guided else None,
        "guidance_interval": [interval.low, interval.high] if guided and interval else None,
        "clip_denoised": bool(clip_denoised),
        "autoencoder": autoencoder,
        "precision": precision,
    }


def generate_samples(sampler: Sampler, folder: SampleFolder, batch_size: int = 64, rank: int = 0, world_size: int = 1,
                     progress: bool = True) -> int:
    """Make every missing sample of this rank's share; returns how many were made. Safe to rerun after a kill."""
    todo = folder.missing(rank, world_size)
    bar = tqdm(total=len(todo), desc=f"sampling {folder.root.name}", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        indices = todo[start:start + batch_size]
        images, _ = sampler.sample(indices)
        folder.write(indices, images)
        bar.update(len(indices))
    bar.close()
    if world_size == 1:
        folder.mark_complete()
    return len(todo)
