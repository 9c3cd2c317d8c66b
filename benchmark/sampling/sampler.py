"""Batched, seed-exact ancestral sampling of any guidance method (fine-tune only, CFG, DoG, ...).

Sample i draws its class label, its starting noise and every step's noise from its own generator, seeded by
(seed, i). A sample therefore does not depend on the batch it lands in, the shard or GPU that makes it, or on
whether the run was interrupted and resumed; and fine-tune only, CFG and DoG at every w start from the same noise
and labels, so their differences are the guidance's alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from benchmark.devices import precision
from benchmark.guidance import GuidedDenoiser


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of run ``seed`` (SeedSequence mixing: no collisions between runs)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_inputs(seed: int, indices: Sequence[int], num_classes: int, shape: tuple[int, ...], num_steps: int):
    """Labels (B,), starting noise (B, *shape) and per-step noise (B, num_steps, *shape), drawn on the CPU
    (so any device gives the same numbers) from one generator per sample."""
    labels, x_T, step_noise = [], [], []
    g = torch.Generator()
    for i in indices:
        g.manual_seed(sample_seed(seed, i))
        labels.append(int(torch.randint(num_classes, (1,), generator=g)))
        x_T.append(torch.randn(shape, generator=g))
        step_noise.append(torch.randn((num_steps, *shape), generator=g))
    return torch.tensor(labels, dtype=torch.long), torch.stack(x_T), torch.stack(step_noise)


def labels_among(seed: int, indices: Sequence[int], classes: Sequence[int]) -> Tensor:
    """Sample i's label drawn uniformly among ``classes`` by the first draw of its (seed, i) generator, as
    ``sample_inputs`` draws it among all classes: ``classes = range(K)`` gives the same labels."""
    g = torch.Generator()
    labels = []
    for i in indices:
        g.manual_seed(sample_seed(seed, i))
        labels.append(int(classes[int(torch.randint(len(classes), (1,), generator=g))]))
    return torch.tensor(labels, dtype=torch.long)


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W) -> uint8 (N, H, W, C), rounding as DiT's sample_ddp.py does (127.5 x + 128, clamped,
    truncated)."""
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


@dataclass
class Sampler:
    """Turns sample indices into uint8 images: labels and noise from (seed, i), the guided denoiser through the
    respaced diffusion, then the autoencoder's decoder."""

    denoiser: GuidedDenoiser
    diffusion: object  # a SpacedDiffusion
    autoencoder: torch.nn.Module
    latent_shape: tuple[int, int, int]
    num_classes: int
    seed: int = 0
    clip_denoised: bool = False
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"         # of the network forwards (benchmark.devices.precision)
    decode_precision: str = "fp32"  # of the autoencoder's decoder
    decode_batch_size: int = 64
    classes: Optional[tuple[int, ...]] = None  # sample only these classes (labels_among); None = all of them

    def model_fn(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        with precision(self.precision, self.device):
            out = self.denoiser(x, t, y)
        return out.float()

    @torch.no_grad()
    def sample_latents(self, indices: Sequence[int], labels: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        num_steps = self.diffusion.num_timesteps
        drawn_labels, x_T, step_noise = sample_inputs(self.seed, indices, self.num_classes, self.latent_shape, num_steps)
        if labels is None and self.classes is not None:
            labels = labels_among(self.seed, indices, self.classes)
        y = (drawn_labels if labels is None else labels).to(self.device)
        x_T, step_noise = x_T.to(self.device), step_noise.to(self.device)
        z = self.diffusion.p_sample_loop(self.model_fn, x_T.shape, noise=x_T, clip_denoised=self.clip_denoised,
                                         model_kwargs={"y": y}, step_noise=lambda i: step_noise[:, i])
        return z, y

    @torch.no_grad()
    def decode(self, z: Tensor) -> np.ndarray:
        out = []
        for chunk in z.split(self.decode_batch_size):
            with precision(self.decode_precision, self.device):
                out.append(to_uint8(self.autoencoder.decode(chunk)))
        return np.concatenate(out)

    def sample(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (B, H, W, 3) and their labels for the given sample indices."""
        z, y = self.sample_latents(indices)
        return self.decode(z), y.cpu().numpy()
