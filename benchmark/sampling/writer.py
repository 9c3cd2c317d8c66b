"""Sample folders: PNGs in shards of ``shard_size`` plus a manifest, resumable, shard-parallel and verifiable.

Layout: ``OUT/manifest.json`` (the config that made the samples; a different config in the same folder is an
error, never a silent mix; ``complete: true`` once every image exists), ``OUT/shard_KKK/IIIIII.png`` and, per shard,
``OUT/shard_KKK/index.json``: each image's sha256 and class label, ``{"000123.png": {"sha256": ..., "label": 3}}``.
A PNG is written to a temporary name and renamed, then recorded in its shard's index (under a lock: several
processes may write one shard), so a kill never leaves a truncated image behind, and an image that exists but was
not recorded counts as missing and is made again (sample i depends only on (seed, i)). ``check_sample_set`` reads
it all back before an evaluation: complete, the count, every image's hash (or, in folders older than the index,
that every image decodes).
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from benchmark.errors import UserError, first_line
from benchmark.io import atomic_write_json, file_lock, file_sha256, read_json

MANIFEST = "manifest.json"
TIMING = "timing.json"  # measured sampling time per process (SampleFolder.record_timing); never part of identity
INDEX = "index.json"
INDEX_VERSION = 1  # manifests without it predate the per-shard index: their PNGs are checked by decoding
HOST = socket.gethostname().replace(".", "_")


def _read_manifest(root: Path) -> Optional[dict]:
    try:
        return read_json(root / MANIFEST)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{root / MANIFEST} is unreadable ({first_line(e)}); restore it, or delete the folder and "
                        f"sample again") from None
    except NotADirectoryError:
        raise UserError(f"{root} is a file, not a folder; pass a folder") from None


def recorded_timing(root: str | os.PathLike) -> dict:
    """{sampling_s_per_image, sampling_device, flops_per_image} of a sample folder's recorded sampling time (empty
    for a set made before timings were recorded); see SampleFolder.record_timing."""
    parts = (read_json(Path(root) / TIMING) or {}).get("parts", [])
    images = sum(p["images"] for p in parts)
    if not images:
        return {}
    flops = {p["flops_per_image"] for p in parts}
    return {"sampling_s_per_image": sum(p["seconds"] for p in parts) / images,
            "sampling_device": "; ".join(sorted({p["device"] for p in parts})),
            "flops_per_image": flops.pop() if len(flops) == 1 else None}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_error(root: Path, error: OSError) -> UserError:
    reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or first_line(error))
    fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    return UserError(f"cannot write samples to {root} ({reason}); {fix} and rerun the same command: it resumes "
                     f"where it stopped")


class SampleFolder:
    def __init__(self, root: str | os.PathLike, num_samples: int, config: dict, shard_size: int = 1000):
        self.root = Path(root)
        self.num_samples = int(num_samples)
        self.config = config
        self.shard_size = shard_size
        self.indexed = True  # set by open() from the manifest

    def path(self, index: int) -> Path:
        return self.root / f"shard_{index // self.shard_size:03d}" / f"{index:06d}.png"

    def index_path(self, shard: int) -> Path:
        return self.root / f"shard_{shard:03d}" / INDEX

    def open(self, overwrite: bool = False) -> "SampleFolder":
        """Create the folder or check that an existing one was made by the same config. Leftover temporary files
        of killed writers on this machine are removed."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root} is a file, not a folder; pass a new folder for the samples")
        manifest = _read_manifest(self.root)
        if manifest is not None and manifest.get("config") != self.config and not overwrite:
            changed = sorted(k for k in set(manifest.get("config", {})) | set(self.config)
                             if manifest.get("config", {}).get(k) != self.config.get(k))
            raise ValueError(f"{self.root} holds samples of another config (differs in {', '.join(changed[:4])}); "
                             f"pass a new --out or --overwrite")
        if manifest is None or manifest.get("config") != self.config:
            try:
                if overwrite:
                    for shard in self.root.glob("shard_*"):
                        shutil.rmtree(shard)
                manifest = {"config": self.config, "num_samples": self.num_samples, "shard_size": self.shard_size,
                            "complete": False, "index": INDEX_VERSION}
                atomic_write_json(self.root / MANIFEST, manifest)
            except OSError as e:
                raise _write_error(self.root, e) from None
        self.shard_size = int(manifest.get("shard_size", self.shard_size))
        self.indexed = manifest.get("index") == INDEX_VERSION
        self._remove_stale_temporaries()
        return self

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.root.glob("shard_*/.*.tmp"):  # .NAME.HOST.PID.tmp
            parts = tmp.name.rsplit(".", 3)
            if len(parts) == 4 and parts[1] == HOST and parts[2].isdigit() and not _pid_alive(int(parts[2])):
                tmp.unlink(missing_ok=True)

    def recorded(self, shard: int) -> dict:
        """The index of one shard: {file name: {"sha256", "label"}}."""
        try:
            return read_json(self.index_path(shard), {}) or {}
        except (ValueError, UnicodeDecodeError):
            return {}  # an unreadable index: its images are made again (and a fresh index written)

    def _done(self, indices: Iterable[int]) -> set[int]:
        by_shard: dict[int, dict] = {}
        done = set()
        for i in indices:
            path = self.path(i)
            if not path.exists():
                continue
            if self.indexed:
                shard = by_shard.setdefault(i // self.shard_size, self.recorded(i // self.shard_size))
                if path.name not in shard:
                    continue  # written, but killed before it was recorded: made again
            done.add(i)
        return done

    def missing(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's sample indices (i % world_size == rank) that are not written and recorded yet."""
        mine = range(rank, self.num_samples, world_size)
        done = self._done(mine)
        return [i for i in mine if i not in done]

    def write(self, indices: Iterable[int], images: np.ndarray, labels: Optional[Iterable[int]] = None) -> None:
        """Write the PNGs of ``indices`` and record their sha256 and label in their shards' indexes. A failed
        write (a full disk) leaves no temporary file and is one line."""
        indices = list(indices)
        labels = [None] * len(indices) if labels is None else [int(y) for y in labels]
        entries: dict[int, dict] = {}
        for i, img, label in zip(indices, images, labels):
            path = self.path(i)
            tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.tmp")  # unique: workers may share a folder
            buffer = io.BytesIO()
            Image.fromarray(img).save(buffer, format="PNG")
            data = buffer.getvalue()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_file(tmp, data)
                os.replace(tmp, path)
            except BaseException as e:
                tmp.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    raise _write_error(self.root, e) from None
                raise
            entries.setdefault(i // self.shard_size, {})[path.name] = {
                "sha256": hashlib.sha256(data).hexdigest(), "label": label}
        for shard, new in entries.items():
            self._record(shard, new)

    def _record(self, shard: int, new: dict) -> None:
        index = self.index_path(shard)
        try:
            with file_lock(index.parent / ".index"):
                for stale in index.parent.glob(f".{INDEX}.*.tmp"):  # a killed writer's; no one else writes now
                    stale.unlink(missing_ok=True)
                atomic_write_json(index, {**self.recorded(shard), **new})
        except OSError as e:
            raise _write_error(self.root, e) from None

    def mark_complete(self, extra: Optional[dict] = None) -> None:
        """Record that the first ``num_samples`` images exist (a later, larger request extends the folder)."""
        if self.missing():
            return
        manifest = read_json(self.root / MANIFEST) or {}
        done = max(self.num_samples, manifest.get("num_samples", 0) if manifest.get("complete") else 0)
        manifest.update({"complete": True, "num_samples": done, **(extra or {})})
        atomic_write_json(self.root / MANIFEST, manifest)

    def record_timing(self, images: int, seconds: float, device: str, flops_per_image: Optional[float]) -> None:
        """Add one process's sampling time (network forwards and decoding; PNG writing runs beside it) to
        ``timing.json``: several processes and resumed runs each add theirs, so seconds / images is the set's rate."""
        if images <= 0:
            return
        path = self.root / TIMING
        with file_lock(self.root / ".timing"):
            parts = (read_json(path) or {}).get("parts", [])
            parts.append({"images": int(images), "seconds": float(seconds), "device": device,
                          "flops_per_image": flops_per_image})
            atomic_write_json(path, {"parts": parts})

    def is_complete(self) -> bool:
        manifest = read_json(self.root / MANIFEST)
        return bool(manifest and manifest.get("config") == self.config and manifest.get("complete")
                    and manifest.get("num_samples", 0) >= self.num_samples)

    def image_paths(self) -> list[Path]:
        return [self.path(i) for i in range(self.num_samples)]

    def labels(self) -> np.ndarray:
        """The recorded class label of each of the ``num_samples`` images (-1 where none is recorded)."""
        out = np.full(self.num_samples, -1, dtype=np.int64)
        shards: dict[int, dict] = {}
        for i in range(self.num_samples):
            entry = shards.setdefault(i // self.shard_size, self.recorded(i // self.shard_size)).get(self.path(i).name)
            if entry and entry.get("label") is not None:
                out[i] = entry["label"]
        return out

    def verified_paths(self, num_samples: Optional[int] = None, allow_partial: bool = False,
                       progress: bool = False, command: str = "dogbench sample",
                       allow_flag: Optional[str] = "--allow-partial") -> list[Path]:
        """The first ``num_samples`` images, checked (``check_sample_set``) before they are evaluated: a missing
        or corrupted image is a one-line UserError, unless ``allow_partial`` (then the intact ones). ``command``
        and ``allow_flag`` are what the error's advice names (``dogbench run`` has no --allow-partial)."""
        check = check_sample_set(self.root, num_samples or self.num_samples, progress=progress)
        if not check.ok and not allow_partial:
            raise UserError(check.error(allow_flag, command))
        return check.paths


@dataclass
class SampleSetCheck:
    """What ``check_sample_set`` found in a sample folder."""

    root: Path
    expected: int                 # images the set should hold
    complete: bool                # the manifest says the set was finished
    paths: list[Path]             # the intact images, in index order
    labels: np.ndarray            # their recorded labels (-1: none recorded)
    missing: list[int] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)  # (image, why)

    @property
    def ok(self) -> bool:
        return self.complete and not self.missing and not self.broken

    def describe(self) -> str:
        parts = [f"{len(self.paths)} of {self.expected} images intact"]
        if not self.complete:
            parts.append("the manifest says sampling did not finish")
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[0]:06d}.png)")
        if self.broken:
            path, why = self.broken[0]
            parts.append(f"{len(self.broken)} corrupted (e.g. {path.relative_to(self.root)}: {why})")
        return f"{self.root}: " + ", ".join(parts)

    def error(self, flag: Optional[str] = "--allow-partial", command: str = "dogbench sample") -> str:
        """The check's one line with the fix: rerun ``command`` (which makes what is missing), or pass ``flag``
        (None: the command has no such flag) to score the intact images."""
        fix = (f"delete the corrupted images and rerun the same `{command}` command (it makes what is missing)"
               if self.broken else f"finish it with the same `{command}` command (it resumes)")
        partial = f", or pass {flag} to score the {len(self.paths)} intact images" if flag else ""
        return f"{self.describe()}; {fix}{partial}"


def check_sample_set(root: str | os.PathLike, num_samples: Optional[int] = None,
                     progress: bool = False) -> Optional[SampleSetCheck]:
    """Read back a dogbench sample folder: the manifest's ``complete`` flag, the first ``num_samples`` (default: the
    manifest's count) images present, each image's sha256 against its shard index (images without one, in folders
    older than the index, must decode). None when ``root`` holds no manifest (not a dogbench folder)."""
    root = Path(root)
    manifest = _read_manifest(root)
    if manifest is None:
        return None
    expected = int(num_samples or manifest.get("num_samples", 0))
    folder = SampleFolder(root, expected, manifest.get("config"), int(manifest.get("shard_size", 1000)))
    folder.indexed = manifest.get("index") == INDEX_VERSION
    complete = bool(manifest.get("complete")) and int(manifest.get("num_samples", 0)) >= expected
    paths, labels, missing, broken = [], [], [], []
    shards: dict[int, dict] = {}
    for i in tqdm(range(expected), desc=f"checking {root.name}", unit="img", disable=not progress, leave=False):
        path = folder.path(i)
        entry = shards.setdefault(i // folder.shard_size, folder.recorded(i // folder.shard_size)).get(path.name)
        if not path.is_file():
            missing.append(i)
            continue
        if entry:
            if file_sha256(path) != entry.get("sha256"):
                broken.append((path, "its sha256 differs from the one recorded when it was written"))
                continue
        elif folder.indexed:
            missing.append(i)  # written but never recorded (a kill in between): not trusted, made again on resume
            continue
        else:
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, ValueError, SyntaxError) as e:
                broken.append((path, f"cannot be decoded ({first_line(e, 80)})"))
                continue
        paths.append(path)
        labels.append(entry.get("label") if entry and entry.get("label") is not None else -1)
    return SampleSetCheck(root, expected, complete, paths, np.asarray(labels, dtype=np.int64), missing, broken)

