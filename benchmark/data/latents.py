"""The latent cache: every training image encoded once by the VAE, both horizontal flips, kept as the encoder's
Gaussian (mean, std), already multiplied by the latent scale (0.18215 for SD's VAE).

Why (mean, std) and not one sample: on-the-fly training encodes a randomly flipped image and draws
``z = mean + std * noise``. Storing both flips' moments lets training draw exactly that (a random flip, then fresh
noise every time the image is used) without running the encoder again, which costs more than a DiT-XL/2 training
step. Pixel-space models (the identity autoencoder) have nothing to cache.

Layout (``cache_dir/<dataset>-<split>-<res>px-<vae>-<key>/``): ``manifest.json`` (the key and, when finished,
``complete: true``) and ``chunk-00000.pt``... each holding ``mean``/``std`` of shape (n, 2, C, h, w) (index 1 on
axis 1 = flipped image) and ``labels``. Chunks are written atomically, so an interrupted build resumes at the first
missing chunk. The directory name holds a hash of everything that determines the latents (dataset fingerprint,
split, resolution, VAE identity, storage dtype), so a changed dataset or VAE gets a new cache.

Integrity: each chunk's sha256 goes into ``chunk-NNNNN.pt.sha256`` as it is written (several processes may write
chunks) and into the manifest when the cache is complete; loading checks every chunk against the manifest (a corrupted chunk is one line naming it and
how to re-encode it).
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from benchmark.data.registry import DatasetSpec, get_dataset
from benchmark.distributed import barrier, main_writes, rank_world
from benchmark.data.transforms import eval_transform
from benchmark.io import (atomic_torch_save, atomic_write_json, atomic_write_text, cached_file_sha256, check_sha256,
                          config_hash, read_json, results_root)
from benchmark.models.autoencoder import load_autoencoder

CACHE_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def latent_cache_root(explicit: Optional[str | os.PathLike] = None) -> Path:
    """Where caches live: ``explicit``, else ``<results root>/cache/latents``."""
    return Path(explicit).expanduser() if explicit else results_root() / "cache" / "latents"


def is_pixel_space(autoencoder) -> bool:
    """True for the identity autoencoder (or its spec), whose 'latents' are the images themselves."""
    if autoencoder is None or isinstance(autoencoder, (str, os.PathLike)):
        return str(autoencoder) in ("None", "", "identity", "none", "pixel")
    return getattr(autoencoder, "name", None) == "identity"


def autoencoder_identity(autoencoder) -> dict:
    """What identifies a VAE's encoder: its name, its architecture config and a hash of its weights' bytes (about a
    second for SD's VAE), so two different VAEs at the same path never share a cache."""
    vae = getattr(autoencoder, "vae", None)
    arch = {k: v for k, v in dict(getattr(vae, "config", {}) or {}).items() if not k.startswith("_")}
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in autoencoder.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {"name": str(autoencoder.name), "scale": float(autoencoder.scale), "config": config_hash(arch),
            "weights": h.hexdigest()[:16]}


class LatentCache:
    """A finished (or partly built) cache directory. ``load()`` returns every chunk concatenated."""

    def __init__(self, root: Path, key: dict):
        self.root = Path(root)
        self.key = key

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def num_images(self) -> int:
        return int(self.key["num_images"])

    @property
    def chunk_size(self) -> int:
        return int(self.key["chunk_size"])

    @property
    def num_chunks(self) -> int:
        return (self.num_images + self.chunk_size - 1) // self.chunk_size

    def chunk_path(self, index: int) -> Path:
        return self.root / f"chunk-{index:05d}.pt"

    def chunk_range(self, index: int) -> range:
        return range(index * self.chunk_size, min(self.num_images, (index + 1) * self.chunk_size))

    def hash_path(self, index: int) -> Path:
        return self.root / f"chunk-{index:05d}.pt.sha256"

    def write_chunk(self, index: int, chunk: dict) -> None:
        """The chunk, then its sha256 beside it (the manifest collects them when the cache is complete)."""
        path = self.chunk_path(index)
        atomic_torch_save(chunk, path)
        atomic_write_text(self.hash_path(index), f"{cached_file_sha256(path)}  {path.name}\n")

    def recorded_hashes(self) -> dict[str, str]:
        manifest = read_json(self.manifest_path, {}) or {}
        return dict(manifest.get("chunks") or {}) if manifest.get("key") == self.key else {}

    def chunk_hashes(self) -> dict[str, str]:
        """{chunk file name: sha256} of every chunk: written beside it, else recorded in the manifest already (a
        chunk kept from an earlier build), else (a chunk from an older version) hashed now."""
        recorded = self.recorded_hashes()
        hashes = {}
        for c in range(self.num_chunks):
            side, name = self.hash_path(c), self.chunk_path(c).name
            hashes[name] = (side.read_text().split()[0] if side.is_file()
                            else recorded.get(name) or cached_file_sha256(self.chunk_path(c)))
        return hashes

    def record_hashes(self) -> None:
        """Every chunk's hash into the manifest, marked complete; the hashes beside the chunks are then removed."""
        atomic_write_json(self.manifest_path, {"key": self.key, "complete": True, "chunks": self.chunk_hashes()})
        for c in range(self.num_chunks):
            self.hash_path(c).unlink(missing_ok=True)

    def verify(self, index: int, recorded: dict) -> None:
        path = self.chunk_path(index)
        if path.name in recorded:
            check_sha256(path, cached_file_sha256(path), recorded[path.name],
                         f"delete it and run `dogbench latents --dataset {self.key['dataset']} --split "
                         f"{self.key['split']}` (or dogbench run) again to re-encode it")

    def missing_chunks(self) -> list[int]:
        return [c for c in range(self.num_chunks) if not self.chunk_path(c).is_file()]

    @property
    def complete(self) -> bool:
        manifest = read_json(self.manifest_path, {})
        return bool(manifest.get("complete")) and manifest.get("key") == self.key and not self.missing_chunks()

    def chunks(self) -> list[dict]:
        """Every chunk, memory-mapped: processes on one machine share the page cache instead of each holding a copy
        (Food-101's cache is about 5 GB in float32)."""
        if not self.complete:
            raise FileNotFoundError(f"latent cache {self.root} is incomplete; run `dogbench latents` again to finish it")
        recorded = self.recorded_hashes()  # caches made before hashes: not checked
        for c in range(self.num_chunks):
            self.verify(c, recorded)
        return [torch.load(self.chunk_path(c), map_location="cpu", weights_only=True, mmap=True)
                for c in range(self.num_chunks)]

    def load(self) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, std, labels) in memory: mean/std (N, 2, C, h, w) in the storage dtype, labels (N,) int64."""
        parts = self.chunks()
        return (torch.cat([p["mean"] for p in parts]), torch.cat([p["std"] for p in parts]),
                torch.cat([p["labels"] for p in parts]).long())

    def __repr__(self) -> str:
        return f"LatentCache({str(self.root)!r}, images={self.num_images}, complete={self.complete})"


def cache_for(dataset, autoencoder, resolution: int, cache_dir: Optional[str | os.PathLike] = None,
              chunk_size: int = 1024, dtype: str = "float32") -> LatentCache:
    """The cache (built or not) of ``dataset`` (an ImageDataset) encoded by ``autoencoder`` at ``resolution``."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown latent dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    key = {
        "version": CACHE_VERSION, "dataset": dataset.name, "split": dataset.split, "fingerprint": dataset.fingerprint(),
        "num_images": len(dataset), "resolution": int(resolution), "autoencoder": autoencoder_identity(autoencoder),
        "dtype": dtype, "chunk_size": int(chunk_size),
    }
    vae_slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(autoencoder.name)).name)[-40:]
    name = f"{dataset.name}-{dataset.split}-{int(resolution)}px-{vae_slug}-{config_hash(key)}"
    return LatentCache(latent_cache_root(cache_dir) / name, key)


def build_latent_cache(dataset, autoencoder, resolution: Optional[int] = None,
                       cache_dir: Optional[str | os.PathLike] = None, *, split: str = "train", data_root=None,
                       batch_size: int = 64, chunk_size: int = 1024, num_workers: int = 0, dtype: str = "float32",
                       device: Optional[str | torch.device] = None, progress: bool = True) -> LatentCache:
    """Encode every image of ``dataset`` (ADM centre crop at ``resolution``, and its mirror image) that the cache
    does not hold yet; returns the complete cache. Safe to interrupt and rerun: finished chunks are kept.

    ``dataset``: an ImageDataset, a registered name or a DatasetSpec (with ``split``, ``data_root``). ``autoencoder``: a loaded
    KLAutoencoder or a spec for ``benchmark.models.load_autoencoder``. ``resolution`` defaults to the dataset's."""
    if is_pixel_space(autoencoder):
        raise ValueError("pixel-space models (identity autoencoder) train on the images; there is nothing to cache")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dataset, (str, DatasetSpec)):
        dataset = get_dataset(dataset, split=split, root=data_root)
    if isinstance(autoencoder, (str, os.PathLike)):
        autoencoder = load_autoencoder(autoencoder, device=device)
    resolution = int(resolution or dataset.resolution)
    if resolution % autoencoder.downsample:
        raise ValueError(f"resolution {resolution} is not a multiple of the VAE's downsampling {autoencoder.downsample}")
    cache = cache_for(dataset, autoencoder, resolution, cache_dir, chunk_size, dtype)
    if cache.complete:
        return cache
    with main_writes() as mine:
        if mine:
            cache.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache.manifest_path, {"key": cache.key, "complete": False,
                                                    "chunks": cache.recorded_hashes()})  # of the chunks kept

    autoencoder = autoencoder.to(device).eval()
    images = copy.copy(dataset)  # the caller's transform (if any) is not ours to change
    images.transform = eval_transform(resolution)
    rank, world = rank_world()
    missing = [c for c in cache.missing_chunks() if c % world == rank]  # several processes: a share of the chunks each
    bar = tqdm(total=sum(len(cache.chunk_range(c)) for c in missing), unit="img", disable=not progress,
               desc=f"encoding {dataset.name} {dataset.split} at {resolution}px")
    for c in missing:
        rows = cache.chunk_range(c)
        loader = DataLoader(Subset(images, list(rows)), batch_size=batch_size, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        means, stds, labels = [], [], []
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            mean, std = autoencoder.encode_moments(torch.cat([x, x.flip(-1)]))
            n = len(x)  # first half: the images, second half: their mirror images -> (n, 2, C, h, w)
            means.append(torch.stack([mean[:n], mean[n:]], 1).to("cpu", DTYPES[dtype]))
            stds.append(torch.stack([std[:n], std[n:]], 1).to("cpu", DTYPES[dtype]))
            labels.append(torch.as_tensor(y))
            bar.update(n)
        cache.write_chunk(c, {"mean": torch.cat(means), "std": torch.cat(stds), "labels": torch.cat(labels),
                              "rows": [rows.start, rows.stop]})
    bar.close()
    barrier()  # every rank's chunks are on disk
    with main_writes() as mine:
        if mine:
            if cache.missing_chunks():
                raise RuntimeError(f"{cache.root}: chunks {cache.missing_chunks()[:5]} are missing after encoding")
            cache.record_hashes()
    return cache


class LatentDataset(Dataset):
    """Training items from a cache: ``2N`` items where item ``j`` is image ``j mod N``, mirrored when ``j >= N``
    (the sampler picks the flip, so it is reproducible), as ``(mean, std, label)`` in float32. The chunks stay
    memory-mapped."""

    def __init__(self, cache: LatentCache):
        self.chunks = cache.chunks()
        self.chunk_size = cache.chunk_size
        self.labels = torch.cat([c["labels"] for c in self.chunks]).long()
        self.num_images = len(self.labels)

    @classmethod
    def from_cache(cls, cache: LatentCache) -> "LatentDataset":
        return cls(cache)

    def __len__(self) -> int:
        return 2 * self.num_images

    def __getitem__(self, j: int):
        i, flip = j % self.num_images, j // self.num_images
        chunk = self.chunks[i // self.chunk_size]
        k = i % self.chunk_size
        return chunk["mean"][k, flip].float(), chunk["std"][k, flip].float(), self.labels[i]
