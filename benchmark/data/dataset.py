"""The dataset object every stage reads: ``ds[i] -> (PIL RGB image, int label)`` plus what the pipeline needs to
know about it (labels, class names, a fingerprint for cache keys).

``ImageDataset`` holds the labels and the unreadable-image policy; a subclass says where pixels come from:
``FileImageDataset`` (image files of an on-disk layout, here) or ``ArrayImageDataset`` (an .npz, in shared32.py).

Unreadable images: a corrupt file is not worth losing a day-long fine-tuning run over, but silently training on a
broken copy is worse. So an unreadable image is skipped -- replaced by the next readable image of the same class, so
labels stay right -- counted in ``ds.unreadable`` and warned about once; more than 1% unreadable is an error that
names the fix. ``check_images()`` scans everything up front and drops the unreadable ones instead.
"""
from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from benchmark.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_UNREADABLE_FRACTION = 0.01
# what a broken image file raises in PIL: truncated/garbled data (OSError, incl. UnidentifiedImageError and a missing
# file), bad headers (ValueError), absurd sizes (DecompressionBombError), bad palettes and the like (SyntaxError)
UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def is_image_file(name: str) -> bool:
    # "._x.jpg" files are macOS resource forks that unpacking some archives leaves behind
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class ImageDataset(torch.utils.data.Dataset):
    """(image, label) pairs of one split of one registered dataset. See .notes/DATA_API.md for the contract."""

    def __init__(self, name: str, split: str, labels: Sequence[int], class_names: Sequence[str], resolution: int,
                 transform: Optional[Callable] = None):
        self.name = name
        self.split = split
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = [str(c) for c in class_names]
        self.num_classes = len(self.class_names)
        self.resolution = int(resolution)
        self.transform = transform
        self.unreadable: set[int] = set()  # indices found unreadable so far
        self._warned = False
        self._fingerprint: Optional[str] = None

    # --- what a subclass provides ---
    def load_image(self, index: int) -> Image.Image:
        """The RGB image at ``index``; raises one of UNREADABLE_ERRORS when it cannot be decoded."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from, for messages."""
        raise NotImplementedError

    def _take(self, indices: np.ndarray) -> None:
        """Keep only the items at ``indices`` (the subclass's own per-item fields; labels are done here)."""
        raise NotImplementedError

    def _content_digest(self, h) -> None:
        """Feed what identifies the on-disk data of these items into the hash ``h``."""
        raise NotImplementedError

    # --- the shared behaviour ---
    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image, label = self._readable_item(int(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, classes={self.num_classes})"

    def _readable_item(self, index: int):
        if index < 0:
            index += len(self)
        if index not in self.unreadable:
            try:
                return self.load_image(index), int(self.labels[index])
            except UNREADABLE_ERRORS as e:
                self._mark_unreadable(index, e)
        # substitute the next readable image of the same class (wrapping around), so the label stays right
        same_class = np.flatnonzero(self.labels == self.labels[index])
        start = int(np.searchsorted(same_class, index))
        for j in np.roll(same_class, -start):
            j = int(j)
            if j == index or j in self.unreadable:
                continue
            try:
                return self.load_image(j), int(self.labels[j])
            except UNREADABLE_ERRORS as e:
                self._mark_unreadable(j, e)
        label = self.class_names[self.labels[index]]
        raise UserError(f"{self.name} {self.split}: no readable image left in class {label!r}; "
                        f"re-extract the dataset and check it with `dogbench prepare {self.name} --check-images`")

    def _mark_unreadable(self, index: int, error: BaseException) -> None:
        self.unreadable.add(index)
        self._raise_if_too_many(len(self.unreadable), example=f"{self.describe(index)}: {error}")
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.name} {self.split}: skipping unreadable image {self.describe(index)} ({error}); "
                          f"further ones are counted in ds.unreadable", RuntimeWarning, stacklevel=3)

    def _raise_if_too_many(self, count: int, example: str) -> None:
        if count > MAX_UNREADABLE_FRACTION * len(self):
            raise UserError(f"{self.name} {self.split}: {count} of {len(self)} images are unreadable (more than "
                            f"{MAX_UNREADABLE_FRACTION:.0%}; e.g. {example}); re-download or re-extract the dataset "
                            f"and check it with `dogbench prepare {self.name} --check-images`")

    def check_images(self, progress: bool = True) -> int:
        """Decode every image; drop the unreadable ones (warning once with their count) and return how many.
        More than 1% unreadable raises UserError."""
        bad, example = [], ""
        for i in tqdm(range(len(self)), desc=f"checking {self.name} {self.split}", disable=not progress,
                      unit="img", leave=False):
            try:
                self.load_image(i)
            except UNREADABLE_ERRORS as e:
                bad.append(i)
                example = example or f"{self.describe(i)}: {e}"
        if bad:
            self._raise_if_too_many(len(bad), example)
            warnings.warn(f"{self.name} {self.split}: skipped {len(bad)} unreadable image(s) of {len(self)} "
                          f"(e.g. {example})", RuntimeWarning, stacklevel=2)
            self._select(np.setdiff1d(np.arange(len(self)), bad))
        return len(bad)

    def _select(self, indices: np.ndarray) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        self._take(indices)
        self.labels = self.labels[indices]
        self.unreadable = set()
        self._fingerprint = None

    def subset(self, indices: Iterable[int]) -> "ImageDataset":
        """A dataset of the same kind holding only ``indices`` (for small runs and tests)."""
        part = copy.copy(self)
        part._select(np.asarray(list(indices), dtype=np.int64))
        return part

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """A short stable id of the data behind this split: changes when any of its files (or the npz) change,
        so caches keyed on it are rebuilt. Independent of where the dataset folder lives."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.name}\n{self.split}\n".encode())
            h.update("\n".join(self.class_names).encode())
            h.update(self.labels.tobytes())
            self._content_digest(h)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


class FileImageDataset(ImageDataset):
    """Images stored as files under ``root``: ``files[i]`` is the path of image i relative to ``root``."""

    def __init__(self, name: str, split: str, root: str | os.PathLike, files: Sequence[str], labels: Sequence[int],
                 class_names: Sequence[str], resolution: int, transform: Optional[Callable] = None):
        super().__init__(name, split, labels, class_names, resolution, transform)
        if len(files) != len(self.labels):
            raise ValueError(f"{len(files)} files but {len(self.labels)} labels")
        self.root = Path(root)
        self.files = [str(f) for f in files]

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def load_image(self, index: int) -> Image.Image:
        with Image.open(self.path(index)) as image:
            return image.convert("RGB")  # convert() decodes fully, so the file is closed after

    def describe(self, index: int) -> str:
        return str(self.path(index))

    def _take(self, indices: np.ndarray) -> None:
        self.files = [self.files[i] for i in indices]

    def _content_digest(self, h) -> None:
        for rel in self.files:
            try:
                st = os.stat(self.root / rel)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"\n{rel}\t{stamp}".encode())
