"""The 32x32 sets shipped with the project (``../shared/data``, see its README.md) as ImageDatasets.

Two .npz formats: ``images`` uint8 (N, 32, 32, 3) already decoded (caltech101, cub100), or ``jpeg`` + ``offsets``,
the original CIFAR-10 JPEG files concatenated (image i is ``jpeg[offsets[i]:offsets[i+1]]``). Both carry ``labels``,
``is_train`` (the dataset's own split) and ``class_names``.

Each .npz is read once per process and shared by every split and subset; CIFAR-10 JPEGs are decoded one at a time
on access (about 70 us each), or all at once by ``ds.array()`` (about 4 s, then cached for the process).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from benchmark.data.dataset import ImageDataset
from benchmark.io import file_sha256


class SharedArrays:
    """The arrays of one .npz, loaded once per process (see ``load_npz``)."""

    def __init__(self, path: Path):
        self.path = path
        with np.load(path, allow_pickle=False) as z:
            self.labels = z["labels"].astype(np.int64)
            self.is_train = z["is_train"].astype(bool)
            self.class_names = [str(c) for c in z["class_names"]]
            self.images: Optional[np.ndarray] = z["images"] if "images" in z.files else None
            self.jpeg: Optional[np.ndarray] = z["jpeg"] if "jpeg" in z.files else None
            self.offsets: Optional[np.ndarray] = z["offsets"] if "offsets" in z.files else None
        if self.images is None and self.jpeg is None:
            raise ValueError(f"{path} holds neither 'images' nor 'jpeg' arrays")
        self._sha256: Optional[str] = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3)."""
        if self.images is not None:
            return self.images[i]
        data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def decode_all(self) -> np.ndarray:
        """Every image as uint8 (N, H, W, 3); decodes the JPEGs the first time, then keeps the array."""
        if self.images is None:
            from tqdm import tqdm

            self.images = np.stack([self.image(i) for i in tqdm(range(len(self)), desc=f"decoding {self.path.name}",
                                                                  unit="img", leave=False, mininterval=2)])
            self.jpeg = self.offsets = None  # the decoded array replaces the bytes
        return self.images

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256


_LOADED: dict[tuple, SharedArrays] = {}  # (path, size, mtime) -> arrays: one copy per process


def load_npz(path: str | os.PathLike) -> SharedArrays:
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = SharedArrays(path)
    return _LOADED[key]


class ArrayImageDataset(ImageDataset):
    """A split (or subset) of a shared .npz: item i is ``arrays`` row ``rows[i]``."""

    def __init__(self, name: str, split: str, arrays: SharedArrays, rows: np.ndarray, resolution: int,
                 transform: Optional[Callable] = None):
        rows = np.asarray(rows, dtype=np.int64)
        super().__init__(name, split, arrays.labels[rows], arrays.class_names, resolution, transform)
        self.arrays = arrays
        self.rows = rows

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.arrays.image(int(self.rows[index])))

    def describe(self, index: int) -> str:
        return f"{self.arrays.path}[{int(self.rows[index])}]"

    def array(self) -> np.ndarray:
        """All images of this split as uint8 (N, H, W, 3), in dataset order (no transform applied)."""
        return self.arrays.decode_all()[self.rows]

    def _take(self, indices: np.ndarray) -> None:
        self.rows = self.rows[indices]

    def _content_digest(self, h) -> None:
        h.update(self.arrays.sha256().encode())
        h.update(self.rows.tobytes())


def open_shared(name: str, path: Path, split: str, resolution: int,
                transform: Optional[Callable] = None) -> ArrayImageDataset:
    arrays = load_npz(path)
    if split == "all":
        rows = np.arange(len(arrays))
    else:
        rows = np.flatnonzero(arrays.is_train if split == "train" else ~arrays.is_train)
    return ArrayImageDataset(name, split, arrays, rows, resolution, transform)
