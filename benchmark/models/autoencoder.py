"""Autoencoders between images in [-1, 1] and the diffusion model's space.

Latent models (DiT-XL/2) use Stable Diffusion's KL autoencoder ``stabilityai/sd-vae-ft-ema`` through diffusers'
``AutoencoderKL``; its latents are multiplied by 0.18215 so they have roughly unit variance, as in DiT.
Pixel-space models use the identity. Both expose the encoder's Gaussian (mean, std) so that training can draw
``mean + std * noise`` from a cache of pre-encoded images exactly as on-the-fly encoding would.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from benchmark.io import cached_file_sha256, check_finite, check_sha256, probe

SD_VAE_SCALE = 0.18215
DEFAULT_VAE = "sd-vae-ft-ema"  # the VAE of DiT and of the paper, by the one name every other module uses
SD_VAE_EMA = f"stabilityai/{DEFAULT_VAE}"
VAE_NAMES = (DEFAULT_VAE, "sd-vae-ft-mse")
AUTOENCODER_NAMES = (*VAE_NAMES, "identity")  # or a local diffusers AutoencoderKL folder
VAE_ALIASES = {DEFAULT_VAE: SD_VAE_EMA, "ema": SD_VAE_EMA, "sd-vae-ft-mse": "stabilityai/sd-vae-ft-mse", "mse": "stabilityai/sd-vae-ft-mse"}


class IdentityAutoencoder(nn.Module):
    """Pixel space: the 'latent' is the image itself, with zero encoder noise."""

    name = "identity"
    downsample = 1
    scale = 1.0

    def latent_channels(self, image_channels: int = 3) -> int:
        return image_channels

    def encode_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(x)

    def decode(self, z: Tensor) -> Tensor:
        return z


class KLAutoencoder(nn.Module):
    """diffusers' AutoencoderKL with DiT's latent scaling. ``encode_moments`` returns the scaled mean and std of
    the posterior, so ``mean + std * randn`` equals ``vae.encode(x).latent_dist.sample() * scale`` in distribution."""

    downsample = 8

    def __init__(self, vae: nn.Module, name: str, scale: float = SD_VAE_SCALE):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.name = name
        self.scale = scale
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    def latent_channels(self, image_channels: int = 3) -> int:
        return self.vae.config.latent_channels

    @torch.no_grad()
    def encode_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dist = self.vae.encode(x).latent_dist
        return dist.mean * self.scale, dist.std * self.scale

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale).sample


def load_autoencoder(spec: Optional[str | os.PathLike] = DEFAULT_VAE, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> nn.Module:
    """``identity``/``none`` for pixel space; otherwise a local diffusers directory, a Hugging Face id or an alias
    (``sd-vae-ft-ema``), read from the local directory or the Hugging Face cache (downloaded only when online)."""
    if spec in (None, "", "identity", "none", "pixel"):
        return IdentityAutoencoder()
    spec = str(spec)
    repo_id = VAE_ALIASES.get(spec, spec)
    local = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) and not local.is_dir():  # a path, not a Hugging Face id: no download to try
        raise FileNotFoundError(f"VAE folder {local} {'is not a folder' if local.exists() else 'not found'}; "
                                f"pass a local diffusers AutoencoderKL folder (config.json and "
                                f"diffusion_pytorch_model.safetensors) or a name: {', '.join(AUTOENCODER_NAMES)}")
    from diffusers import AutoencoderKL  # ~2 s to import, and pixel-space runs never need it

    try:
        if local.is_dir():
            vae = AutoencoderKL.from_pretrained(str(local), torch_dtype=dtype)
        else:
            try:  # the HF cache first: no network when the files are already there
                vae = AutoencoderKL.from_pretrained(repo_id, torch_dtype=dtype, local_files_only=True)
            except OSError:
                probe("https://huggingface.co", timeout=5)  # offline: fail now, not after the hub's retries
                vae = AutoencoderKL.from_pretrained(repo_id, torch_dtype=dtype)
    except Exception as e:
        raise FileNotFoundError(
            f"VAE {spec!r} not found ({type(e).__name__}); download {repo_id} once with "
            f"`hf download {repo_id} config.json diffusion_pytorch_model.safetensors` (the huggingface_hub CLI; it "
            f"goes to the Hugging Face cache) or pass a local diffusers "
            f"directory holding config.json and diffusion_pytorch_model.safetensors") from None
    if not local.is_dir():
        verify_hub_weights(repo_id)
    check_finite(vae.state_dict(), local if local.is_dir() else repo_id,
                 "restore the folder" if local.is_dir() else f"delete it from the Hugging Face cache and download "
                                                             f"it again (`huggingface-cli download {repo_id}`)")
    return KLAutoencoder(vae, name=repo_id if not local.is_dir() else str(local)).to(device)


def verify_hub_weights(repo_id: str) -> None:
    """The Hugging Face cache stores a large (LFS) file under its sha256 (``blobs/<sha256>``, linked from the
    snapshot): check the weights against that name, so corrupted bytes are caught, not only NaN."""
    from huggingface_hub import try_to_load_from_cache  # comes with diffusers, imported only for latent models

    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            blob = Path(os.path.realpath(found))
            if len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name):
                check_sha256(found, cached_file_sha256(blob), blob.name,
                             f"delete it and download it again: `huggingface-cli download {repo_id}`")
