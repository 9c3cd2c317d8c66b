"""The reference DiT/ADM image preprocessing: centre crop to a square, random horizontal flip, tensor in [-1, 1].

``center_crop_arr`` follows ADM's recipe (also used by DiT's train.py): halve the image with a box filter while its
short side is at least twice the target (cheap, alias-free downscaling), then one bicubic resize so the short side
equals the target, then a centre crop. Reproducing it exactly matters: the paper's FID reference statistics and the
VAE latents are computed on images made this way.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """Square ``image_size`` x ``image_size`` RGB centre crop of ``pil_image`` by the ADM recipe."""
    image = pil_image.convert("RGB")
    while min(image.size) >= 2 * image_size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = image_size / min(image.size)
    new_size = (round(image.width * scale), round(image.height * scale))
    if new_size != image.size:  # at the native size (the 32x32 sets at 32) the resize would be a copy
        image = image.resize(new_size, resample=Image.BICUBIC)
    left = (image.width - image_size) // 2
    top = (image.height - image_size) // 2
    return image.crop((left, top, left + image_size, top + image_size))


def to_tensor_pm1(image: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float32 tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


class ImageTransform:
    """PIL image -> tensor (3, resolution, resolution) in [-1, 1]: ``center_crop_arr``, optional random flip.

    A class, not a lambda in a Compose, so DataLoader workers can pickle it. The flip draws from torch's generator,
    which DataLoader seeds per worker."""

    def __init__(self, resolution: int, flip: bool):
        self.resolution = int(resolution)
        self.flip = bool(flip)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = to_tensor_pm1(center_crop_arr(image, self.resolution))
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"ImageTransform(resolution={self.resolution}, flip={self.flip})"


def train_transform(resolution: int, flip: bool = True) -> ImageTransform:
    """The fine-tuning transform: ADM centre crop, random horizontal flip (p=0.5), tensor in [-1, 1]."""
    return ImageTransform(resolution, flip=flip)


def eval_transform(resolution: int) -> ImageTransform:
    """The same crop without the flip: for reference statistics and latent caches that must be deterministic."""
    return ImageTransform(resolution, flip=False)
