"""Sample folders: PNGs in shards of ``shard_size`` plus a manifest, resumable and shard-parallel.

Layout: ``OUT/manifest.json`` (the config that made the samples; a different config in the same folder is an
error, never a silent mix) and ``OUT/shard_KKK/IIIIII.png``. A sample counts as done once its PNG exists; each
PNG is written to a temporary name and renamed, so a kill never leaves a truncated image behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image

from benchmark.io import atomic_write_json, read_json

MANIFEST = "manifest.json"


class SampleFolder:
    def __init__(self, root: str | os.PathLike, num_samples: int, config: dict, shard_size: int = 1000):
        self.root = Path(root)
        self.num_samples = int(num_samples)
        self.config = config
        self.shard_size = shard_size

    def path(self, index: int) -> Path:
        return self.root / f"shard_{index // self.shard_size:03d}" / f"{index:06d}.png"

    def open(self, overwrite: bool = False) -> "SampleFolder":
        """Create the folder or check that an existing one was made by the same config."""
        manifest = read_json(self.root / MANIFEST)
        if manifest is not None and manifest.get("config") != self.config and not overwrite:
            changed = sorted(k for k in set(manifest.get("config", {})) | set(self.config)
                             if manifest.get("config", {}).get(k) != self.config.get(k))
            raise ValueError(f"{self.root} holds samples of another config (differs in {', '.join(changed[:4])}); "
                             f"pass a new --out or --overwrite")
        if manifest is None or manifest.get("config") != self.config:
            if overwrite:
                for png in self.root.glob("shard_*/*.png"):
                    png.unlink()
            atomic_write_json(self.root / MANIFEST, {"config": self.config, "num_samples": self.num_samples,
                                                     "shard_size": self.shard_size, "complete": False})
        return self

    def missing(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's sample indices (i % world_size == rank) whose PNG does not exist yet."""
        return [i for i in range(rank, self.num_samples, world_size) if not self.path(i).exists()]

    def write(self, indices: Iterable[int], images: np.ndarray) -> None:
        for i, img in zip(indices, images):
            path = self.path(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: workers may share a folder
            Image.fromarray(img).save(tmp, format="PNG")
            os.replace(tmp, path)

    def mark_complete(self, extra: Optional[dict] = None) -> None:
        """Record that the first ``num_samples`` images exist (a later, larger request extends the folder)."""
        if self.missing():
            return
        manifest = read_json(self.root / MANIFEST) or {}
        done = max(self.num_samples, manifest.get("num_samples", 0) if manifest.get("complete") else 0)
        manifest.update({"complete": True, "num_samples": done, **(extra or {})})
        atomic_write_json(self.root / MANIFEST, manifest)

    def is_complete(self) -> bool:
        manifest = read_json(self.root / MANIFEST)
        return bool(manifest and manifest.get("config") == self.config and manifest.get("complete")
                    and manifest.get("num_samples", 0) >= self.num_samples)

    def image_paths(self) -> list[Path]:
        return [self.path(i) for i in range(self.num_samples)]
