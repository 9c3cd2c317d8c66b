"""Batched, seed-exact ancestral sampling of any guidance method (fine-tune only, CFG, DoG, ...).

Sample i draws its class label, its starting noise and every step's noise from its own generator, seeded by
(seed, i). A sample therefore does not depend on the batch it lands in, the shard or GPU that makes it, or on
whether the run was interrupted and resumed; and fine-tune only, CFG and DoG at every w start from the same noise
and labels, so their differences are the guidance's alone. A method whose guide takes a random class (ICG) gets it
from a second generator of the same sample, seeded by (seed, i, 1), so every other draw stays as it was.

The sampler checks what it makes before any image is decoded: a guidance rule that returned NaN/inf at some step is
one line naming it (``GuidedDenoiser.finish``), and non-finite latents from any other cause stop the batch too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from benchmark.devices import precision
from benchmark.diffusion import space_timesteps
from benchmark.errors import UserError
from benchmark.guidance import FINETUNED, GuidedDenoiser, MethodSpec, nfe
from benchmark.models.dit import DiT, dit_flops_per_forward

RANDOM_CLASS_STREAM = 1  # sample_seed's stream of a sample's random class (ICG's guide label)


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for sample ``index`` of run ``seed`` (SeedSequence mixing: no collisions between runs); another
    ``stream`` gives an independent generator of the same sample."""
    entropy = [int(seed), int(index)] + ([int(stream)] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def random_classes(seed: int, indices: Sequence[int], labels: Sequence[int], num_classes: int) -> Tensor:
    """Per sample a class other than its own label, uniform over the other ``num_classes - 1``, drawn from the
    sample's own (seed, i, RANDOM_CLASS_STREAM) generator: the same for any batch, shard or resume."""
    if num_classes < 2:
        raise UserError(f"a random other class needs at least 2 classes; the model has {num_classes} (ICG guides with "
                        f"another class: use a model with several classes or another method)")
    g, out = torch.Generator(), []
    for i, label in zip(indices, labels):
        g.manual_seed(sample_seed(seed, i, RANDOM_CLASS_STREAM))
        drawn = int(torch.randint(num_classes - 1, (1,), generator=g))
        out.append(drawn + (drawn >= int(label)))  # skip the sample's own class
    return torch.tensor(out, dtype=torch.long)


def sampling_timesteps(steps: int, training_steps: int = 1000) -> list[int]:
    """The model timesteps a ``steps``-step sampler visits (uniform respacing of the training steps), noisiest first."""
    return sorted(space_timesteps(training_steps, str(int(steps))), reverse=True)


def sample_set_nfe(spec: MethodSpec, steps: int) -> int:
    """Model forwards per image of a sample set of ``spec`` at ``steps`` sampling steps (runs.csv's ``nfe``): steps
    for unguided sets, twice that for DoG, guided steps x calls per step in general (guides skipped outside an
    interval or where a schedule is off not counted). Exactly what the sampler counts while sampling."""
    return nfe(spec, sampling_timesteps(steps))


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
    last_nfe: Optional[int] = None  # model forwards per image the denoiser counted in the last batch

    @property
    def timesteps(self) -> list[int]:
        """The model timesteps this sampler visits, noisiest first."""
        return sorted(getattr(self.diffusion, "timestep_map", range(self.diffusion.num_timesteps)), reverse=True)

    @property
    def nfe(self) -> int:
        """Model forwards per image (predicted from the method and the timesteps; ``last_nfe`` is the count)."""
        return nfe(self.denoiser.spec, self.timesteps)

    def flops_per_image(self) -> Optional[float]:
        """FLOPs (2 per multiply-add) of one image's forwards: nfe x one forward of the fine-tuned DiT (the built-in
        guides share its architecture; a LoRA adapter's few extra FLOPs are not counted); None for a network whose
        FLOPs are unknown (not a DiT)."""
        models = getattr(self.denoiser, "models", {})
        network = models.get(FINETUNED) if isinstance(models, dict) else None
        config = next((m.config for m in network.modules() if isinstance(m, DiT)), None) \
            if isinstance(network, torch.nn.Module) else None
        return None if config is None else self.nfe * dit_flops_per_forward(config)

    def model_fn(self, x: Tensor, t: Tensor, y: Tensor, y_random: Optional[Tensor] = None) -> Tensor:
        with precision(self.precision, self.device):
            out = self.denoiser(x, t, y) if y_random is None else self.denoiser(x, t, y, y_random)
        return out.float()

    @torch.no_grad()
    def sample_latents(self, indices: Sequence[int], labels: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        num_steps = self.diffusion.num_timesteps
        drawn_labels, x_T, step_noise = sample_inputs(self.seed, indices, self.num_classes, self.latent_shape, num_steps)
        if labels is None and self.classes is not None:
            labels = labels_among(self.seed, indices, self.classes)
        y = (drawn_labels if labels is None else labels).to(self.device)
        kwargs = {"y": y}
        guided = isinstance(self.denoiser, GuidedDenoiser)
        if guided and self.denoiser.spec.needs_random_labels():
            kwargs["y_random"] = random_classes(self.seed, indices, y.tolist(), self.num_classes).to(self.device)
        x_T, step_noise = x_T.to(self.device), step_noise.to(self.device)
        if guided:
            self.denoiser.start(self.timesteps)
        z = self.diffusion.p_sample_loop(self.model_fn, x_T.shape, noise=x_T, clip_denoised=self.clip_denoised,
                                         model_kwargs=kwargs, step_noise=lambda i: step_noise[:, i])
        if guided:
            self.last_nfe = self.denoiser.finish()  # a rule's NaN/inf is one line naming it, before any decoding
        if not bool(torch.isfinite(z).all()):
            bad = [int(i) for i, ok in zip(indices, torch.isfinite(z).flatten(1).all(1).tolist()) if not ok]
            raise UserError(f"sampling made non-finite latents for samples {bad[:5]} (seed {self.seed}); the networks "
                            f"returned NaN/inf: check the checkpoints (dogbench sample refuses NaN/inf weights) and "
                            f"the precision (try --precision fp32); nothing of this batch was written")
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
