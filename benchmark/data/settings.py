"""A user's own dataset as an experiment names it (``datasets:`` entries beside registry names):

    datasets:
      - caltech101
      - {name: birds, path: data/birds, layout: folder}     # path relative to the experiment file

The entry's name is the dataset's name in every table, plot, folder and W&B tag."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import field_validator

from benchmark.data.registry import DATASETS, LAYOUTS, DatasetSpec, folder_dataset
from benchmark.errors import did_you_mean
from benchmark.settings import Count, Settings


RESERVED = ("plots", "sweeps", "wandb", "source", "cache", "average")  # results folders, the average row


class OwnDataset(Settings):
    """A dataset that is not in the registry."""

    name: str
    """its name in tables, plots and folders (letters, digits, '.', '_', '-'); not a registered dataset's name"""
    path: str
    """its folder: <class>/*.jpg, or train/<class>/*.jpg and test/<class>/*.jpg (relative: to the experiment file)"""
    layout: str = "folder"
    """how the folder is organised: folder (one sub-folder per class)"""
    resolution: Count = 256
    """its nominal image side in pixels (images are centre-cropped to the source model's size either way)"""

    @field_validator("name")
    @classmethod
    def _own_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r} names folders; use letters, digits, '.', '_', '-'")
        if value in RESERVED:
            raise ValueError(f"{value!r} names a folder or a row of the experiment's results; give your data another name")
        if value in DATASETS:
            raise ValueError(f"{value!r} is a registered dataset; list it by name, or give your own data another name")
        return value

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        if value not in LAYOUTS:
            raise ValueError(f"unknown layout {value!r}{did_you_mean(value, LAYOUTS)}; choose one of {', '.join(LAYOUTS)}")
        return value

    def spec(self, folder: Path) -> DatasetSpec:
        """The registry spec of this dataset, its path already resolved to ``folder``."""
        return folder_dataset(self.name, folder, self.layout, self.resolution)
