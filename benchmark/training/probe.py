"""A sanity probe of a source checkpoint before it is fine-tuned: weights that are finite but broken are refused.

A file without a recorded hash (the DiT release, another training script's checkpoint) can hold corrupted bytes that
keep every value finite; NaN/inf checks and strict loading pass, and the damage shows only as a model that no longer
denoises. The probe measures exactly that: the source's noise-prediction error (eps MSE, on its eps channels, at its
null label) on ``PROBE_IMAGES`` training images of the target, at stratified timesteps with fixed noise, and refuses a
source whose error is above ``PROBE_LIMIT``.

Measured by ``scripts/probe_separation.py`` (the shipped DiT-N/4 source on Caltech-101 32x32): the intact source
scores 0.078 (0.069-0.096 over 20 other draws of 32 images and noise); predicting no noise at all scores 1.0. Of 72
copies with 4 KiB of weight bytes flipped (bit-inverted, or XORed with random bytes that keep every value finite) in
the middle of one weight tensor each, 64 are refused: 35 overflow to a NaN error, the others score 1.14 to 3e8. The
limit 0.5 sits 5x above the intact source's worst draw and 2.3x below the mildest refused copy. Not seen (8 of 72, each within 12 % of the intact score): damage to the
attention's query/key weights that leaves the error nearly unchanged, and to the class rows of the label table,
which the probe does not call and a fine-tune replaces.
Random weights (stand-ins, tests) score 1.0 or more and are refused too: they opt out (``sanity_check=False``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from benchmark.data import get_dataset
from benchmark.data.transforms import eval_transform
from benchmark.diffusion import create_diffusion
from benchmark.io import IntegrityError
from benchmark.models import load_autoencoder
from benchmark.models.dit import DiT
from benchmark.training.spec import TrainingSet

PROBE_IMAGES = 32
PROBE_LIMIT = 0.5   # eps MSE above which a source is refused (intact shipped source: 0.08; no-noise guess: 1.0)
OPT_OUT = "source.sanity_check: false in an experiment, --no-sanity-check for dogbench finetune"


def probe_images(dataset, data_root, resolution: int, autoencoder, n: int = PROBE_IMAGES,
                 split: str = "train") -> torch.Tensor:
    """``n`` evenly spaced training images of ``dataset`` in the model's space (pixels in [-1, 1], or the VAE's
    scaled posterior mean), as the fine-tune will see them (ADM centre crop, no flip)."""
    images = get_dataset(dataset, split=split, root=data_root, transform=eval_transform(resolution))
    picks = np.unique(np.linspace(0, len(images) - 1, num=min(n, len(images))).round().astype(int))
    x = torch.stack([images[int(i)][0] for i in picks])
    if autoencoder is None or getattr(autoencoder, "name", None) == "identity":
        return x
    with torch.no_grad():
        return autoencoder.encode_moments(x)[0]


@torch.no_grad()
def denoising_loss(model: DiT, x0: torch.Tensor, seed: int = 0, batch_size: int = 8,
                   device: str | torch.device = "cpu") -> float:
    """The eps MSE of ``model`` on ``x0`` noised at stratified timesteps (one per 1000/N slice) with fixed noise,
    called with its null label (the label the source is used with by DoG; a fine-tune re-heads the rest)."""
    diffusion = create_diffusion()
    n = len(x0)
    g = torch.Generator().manual_seed(seed)
    t = ((torch.arange(n) + torch.rand(n, generator=g)) * (diffusion.num_timesteps / n)).long()
    noise = torch.randn(x0.shape, generator=g)
    x_t = diffusion.q_sample(x0, t, noise=noise)
    has_null = model.y_embedder.embedding_table.num_embeddings > model.num_classes
    label = model.num_classes if has_null else 0
    channels = x0.shape[1]
    total = 0.0
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        y = torch.full((len(x_t[sl]),), label, dtype=torch.long, device=device)
        out = model(x_t[sl].to(device), t[sl].to(device), y).float()[:, :channels]
        total += float(((out.cpu() - noise[sl]) ** 2).sum())
    return total / noise.numel()


def check_source(model: DiT, path, data: TrainingSet, resolution: int, autoencoder_spec: str,
                 device: Optional[str | torch.device] = None, split: str = "train", limit: float = PROBE_LIMIT) -> float:
    """Refuse (one IntegrityError line) a source that does not denoise the target ``data`` (its ``dataset`` under
    ``root``); returns its probe loss."""
    device = torch.device(device or "cpu")
    autoencoder = load_autoencoder(autoencoder_spec, device="cpu")
    dataset = data.dataset
    x0 = probe_images(dataset, data.root, resolution, autoencoder, split=split)
    training = model.training
    model.eval().to(device)
    try:
        loss = denoising_loss(model, x0, device=device)
    finally:
        model.train(training).to("cpu")
    if not loss <= limit:  # NaN too
        name = dataset if isinstance(dataset, str) else dataset.name
        raise IntegrityError(
            f"source {path} does not denoise {name}: its noise-prediction error on {len(x0)} training images is "
            f"{loss:.3g}, above the limit {limit} (the shipped pre-trained source: 0.08; predicting no noise: 1.0): its "
            f"weights are damaged or untrained; restore or re-download the file (random stand-in weights: {OPT_OUT})")
    return loss
