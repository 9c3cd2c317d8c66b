"""Training data: the target (or source) dataset as a stream of batches whose order is a pure function of the seed.

The order: epoch e is a seeded permutation of the N images, each with a seeded mirror bit (the random horizontal
flip of DiT's training transform); epochs are concatenated into one endless stream, and rank r of W takes
positions r, r + W, r + 2W, ... So the global batch of step s is the same for any number of devices, and a resumed
run starts at position ``global_step * batch`` of the stream: the data position needs no state of its own.

Items are ``(x, label)`` in pixel space, ``(mean, std, label)`` with a VAE (from the latent cache, built in
``prepare_data`` on the first process of each node).
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Iterator, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from benchmark.data import get_dataset, get_spec
from benchmark.data.latents import LatentDataset, build_latent_cache, cache_for, is_pixel_space
from benchmark.data.transforms import center_crop_arr, eval_transform
from benchmark.errors import UserError
from benchmark.models import load_autoencoder

PRELOAD_LIMIT_BYTES = 2 << 30  # pixel sets up to 2 GiB of uint8 are cropped once and kept in memory


class StreamSampler(Sampler[int]):
    """Endless, seeded stream of item indices for one rank, starting ``start`` items into the rank's share.
    Item ``j`` in [0, 2N) means image ``j mod N``, mirrored when ``j >= N``."""

    def __init__(self, num_images: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if num_images < 1:
            raise ValueError("the dataset is empty")
        self.num_images, self.seed, self.rank, self.world_size, self.start = num_images, seed, rank, world_size, start
        self._epoch: Optional[int] = None
        self._items: Optional[np.ndarray] = None

    def epoch_items(self, epoch: int) -> np.ndarray:
        """The items of epoch ``epoch``: a permutation of the images with their mirror bits."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.num_images)
            flips = rng.integers(0, 2, self.num_images)
            self._epoch, self._items = epoch, order + self.num_images * flips
        return self._items

    def global_item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_images)
        return int(self.epoch_items(epoch)[offset])

    def __iter__(self) -> Iterator[int]:
        position = self.start * self.world_size + self.rank
        while True:
            yield self.global_item(position)
            position += self.world_size


class PixelDataset(Dataset):
    """``2N`` items of an ImageDataset at ``resolution`` (ADM centre crop), mirrored for ``j >= N``, as
    ``(x in [-1, 1] of shape (3, r, r), label)``. Small sets are cropped once and kept as uint8."""

    def __init__(self, images, resolution: int, preload: Optional[bool] = None, progress: bool = True):
        self.resolution = int(resolution)
        self.labels = torch.as_tensor(np.asarray(images.labels), dtype=torch.long)
        self.num_images = len(images)
        if preload is None:
            preload = self.num_images * self.resolution ** 2 * 3 <= PRELOAD_LIMIT_BYTES
        self.array: Optional[torch.Tensor] = None
        if preload:
            raw = copy.copy(images)
            raw.transform = None
            self.array = torch.from_numpy(np.stack([
                np.asarray(center_crop_arr(raw[i][0], self.resolution), dtype=np.uint8)
                for i in tqdm(range(self.num_images), desc=f"cropping {images.name} to {self.resolution}px",
                              unit="img", disable=not progress, leave=False, mininterval=2)]))
        else:
            self.images = copy.copy(images)
            self.images.transform = eval_transform(self.resolution)

    def __len__(self) -> int:
        return 2 * self.num_images

    def __getitem__(self, j: int):
        i, flip = j % self.num_images, j // self.num_images
        if self.array is not None:  # the arithmetic of benchmark.data.transforms.to_tensor_pm1
            x = self.array[i].permute(2, 0, 1).float().div(127.5).sub(1.0)
        else:
            x = self.images[i][0]
        return (x.flip(-1) if flip else x), self.labels[i]


class TrainingData(L.LightningDataModule):
    """One dataset split as an endless seeded stream (see the module docstring)."""

    def __init__(self, dataset, resolution: int, global_batch_size: int, *, autoencoder: str = "identity",
                 split: str = "train", data_root: Optional[str | os.PathLike] = None, seed: int = 0,
                 num_workers: int = 0, cache_dir: Optional[str | os.PathLike] = None, max_images: Optional[int] = None,
                 encode_batch_size: int = 64, progress: bool = True):
        super().__init__()
        # a registry name, or the spec of a user's own dataset (pickled with the module into spawned processes)
        self.dataset, self.dataset_name = dataset, get_spec(dataset).name
        self.split, self.data_root = split, data_root
        self.resolution, self.global_batch_size = int(resolution), int(global_batch_size)
        self.autoencoder_spec, self.cache_dir = autoencoder, cache_dir
        self.seed, self.num_workers, self.max_images = seed, num_workers, max_images
        self.encode_batch_size, self.progress = encode_batch_size, progress
        self.train_set: Optional[Dataset] = None
        self.num_classes: Optional[int] = None
        self.fingerprint: Optional[str] = None

    @property
    def pixel_space(self) -> bool:
        return is_pixel_space(self.autoencoder_spec)

    def images(self):
        """The ImageDataset to train on (UserError if missing); ``max_images`` keeps an evenly spread subset."""
        images = get_dataset(self.dataset, split=self.split, root=self.data_root)
        if self.max_images is not None and self.max_images < len(images):
            images = images.subset(np.linspace(0, len(images) - 1, self.max_images).round().astype(np.int64))
        return images

    def latent_cache(self, images, build: bool):
        autoencoder = load_autoencoder(self.autoencoder_spec)
        if self.resolution % autoencoder.downsample:
            raise UserError(f"image size {self.resolution} is not a multiple of the VAE's downsampling "
                            f"{autoencoder.downsample}")
        if build:
            return build_latent_cache(images, autoencoder, self.resolution, self.cache_dir,
                                      batch_size=self.encode_batch_size, num_workers=self.num_workers,
                                      progress=self.progress)
        return cache_for(images, autoencoder, self.resolution, self.cache_dir)

    def prepare_data(self) -> None:
        # one process per node: encode the images once (resumable); pixel space needs nothing
        if not self.pixel_space:
            self.latent_cache(self.images(), build=True)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        images = self.images()
        if self.pixel_space:
            self.train_set = PixelDataset(images, self.resolution, progress=self.progress)
        else:
            self.train_set = LatentDataset.from_cache(self.latent_cache(images, build=False))
        self.num_classes, self.fingerprint = images.num_classes, images.fingerprint()

    def local_batch_size(self, world_size: int) -> int:
        if self.global_batch_size % world_size:
            raise UserError(f"global batch {self.global_batch_size} does not split evenly over {world_size} processes;"
                            f" pass a multiple of {world_size}")
        return self.global_batch_size // world_size

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        step = trainer.global_step if trainer is not None else 0
        batch = self.local_batch_size(world)
        # a resumed run: the trainer's step was restored before this is called, so the stream resumes where it was
        sampler = StreamSampler(self.train_set.num_images, self.seed, rank, world, start=step * batch)
        return DataLoader(self.train_set, batch_size=batch, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0,
                          drop_last=True)

    def state_dict(self) -> dict:
        return {"dataset": self.dataset_name, "split": self.split, "fingerprint": self.fingerprint,
                "seed": self.seed, "global_batch_size": self.global_batch_size, "resolution": self.resolution}

    def load_state_dict(self, state: dict) -> None:
        # a checkpoint is only resumed on the data (and order) it was trained on
        mine = self.state_dict()
        changed = [k for k in ("dataset", "split", "seed", "global_batch_size", "resolution")
                   if k in state and state[k] != mine[k]]
        if changed:
            raise UserError(f"the checkpoint was trained with other data settings ({', '.join(f'{k}={state[k]!r}' for k in changed)}); "
                            f"use another --out directory or the same settings")
        if state.get("fingerprint") and self.fingerprint and state["fingerprint"] != self.fingerprint:
            warnings.warn(f"{self.dataset_name} changed on disk since the checkpoint was written "
                          f"(fingerprint {state['fingerprint']} -> {self.fingerprint}); resuming on the current data",
                          RuntimeWarning)
