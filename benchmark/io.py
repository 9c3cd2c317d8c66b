"""Atomic, resumable file output and the project's standard locations.

Every artefact that takes long to make (checkpoints, latent caches, feature statistics, sample shards, CSVs) is
written to a temporary file in the same directory and renamed into place, so an interrupted or failed write
(disk full, a kill) never leaves a truncated file where a finished one is expected and never destroys the
previous version.

Integrity: every artefact the project writes carries a content hash that is checked when it is read
(``content_sha256`` inside checkpoints and .npz caches, file hashes in the manifests of latent caches and sample
folders); a mismatch is an ``IntegrityError``, one line naming the file and how to rebuild it.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import socket
import tempfile
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from benchmark.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_ENV = "DOGBENCH_DATA"
RESULTS_ROOT_ENV = "DOGBENCH_RESULTS"


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path``.lock, for read-modify-write of files that several workers share
    (runs.csv, sweeps.csv): without it two workers that read before either writes lose one update."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path) -> None:
    """``torch.save`` streamed into a temporary file beside ``path`` and renamed: never built in memory first (a
    DiT-XL/2 training checkpoint with its EMA and AdamW state is about 11 GB)."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def read_json(path, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_file_sha256(path: str | os.PathLike) -> str:
    """``file_sha256``, remembered per (path, size, mtime) for the process: checkpoints (2.7 GB for DiT-XL/2) and
    feature-network weights are hashed once however many manifests and rows name them."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256_of_version(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


class IntegrityError(UserError):
    """An artefact whose bytes no longer match the hash recorded when it was written (disk or copy corruption, a
    hand edit), or weights that hold NaN/inf: one line naming the file and how to rebuild it."""


def bytes_sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(items: Mapping[str, Any]) -> str:
    """sha256 over named arrays (numpy or torch: name, dtype, shape and raw bytes, hashed in place without a copy
    when contiguous) and JSON-able values, in key order. What ``check_content`` verifies after a load."""
    h = hashlib.sha256()
    for name in sorted(items):
        value = items[name]
        h.update(f"\0{name}\0".encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
        elif isinstance(value, (np.ndarray, np.generic)):  # a numpy scalar hashes as the 0-d array np.load gives
            a = np.ascontiguousarray(value)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.reshape(-1).view(np.uint8) if a.size and a.dtype != object else b"")
        elif isinstance(value, Mapping) and value and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in value.values()):
            h.update(content_sha256(value).encode())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


def check_sha256(path, actual: str, expected: str, rebuild: str) -> None:
    """Raise an IntegrityError naming ``path`` and the fix (``rebuild``) unless the hashes agree."""
    if actual != expected:
        raise IntegrityError(f"{path} is corrupted: its content hash {actual[:12]}... differs from the "
                             f"{expected[:12]}... recorded when it was written; {rebuild}")


def nonfinite_entries(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors (torch or numpy) that hold NaN or inf."""
    bad = []
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            if not bool(np.isfinite(value).all()):
                bad.append(name)
    return bad


def check_finite(tensors: Mapping[str, Any], path, fix: str) -> None:
    """Weights with NaN/inf come from corrupted bytes (or a diverged training run): one line, never used."""
    bad = nonfinite_entries(tensors)
    if bad:
        more = f" (+{len(bad) - 2} more)" if len(bad) > 2 else ""
        raise IntegrityError(f"{path} holds NaN/inf weights in {', '.join(bad[:2])}{more}: the file is corrupted; {fix}")


def config_hash(obj: Any, length: int = 12) -> str:
    """A short, stable hash of a JSON-able config: the key of every manifest and cache."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


DATA_ROOT_HELP = "$DOGBENCH_DATA, else ./data, else ../shared/data"  # the default's wording in every --help
RESULTS_ROOT_HELP = "$DOGBENCH_RESULTS, else ./results"


def data_root(explicit: Optional[str | os.PathLike] = None, *, must_exist: bool = False) -> Path:
    """Where datasets live: ``explicit`` (a --data-root flag or an experiment's data_root), else $DOGBENCH_DATA,
    else ``./data`` when it exists, else ``../shared/data`` when it exists (both of the working directory), else
    ``./data``. With ``must_exist``, a root the user chose (flag, config or $DOGBENCH_DATA) that is not a folder is a
    one-line error: a typo must not silently read other data."""
    env = os.environ.get(DATA_ROOT_ENV)
    if explicit or env:
        root = Path(explicit or env).expanduser()
        chosen_by = f"${DATA_ROOT_ENV}" if env and root == Path(env).expanduser() else "--data-root / data_root"
    else:
        return _default_data_root()
    # the default itself, passed on by a caller that resolved it earlier (an experiment's data_dir()), may be missing
    if must_exist and not root.is_dir() and root != _default_data_root():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"data root {root} (from {chosen_by}) {what}: pass the folder that holds the datasets, or "
                        f"create it and see `dogbench prepare DATASET --root {root}` for what goes where")
    return root


def _default_data_root() -> Path:
    """./data, else ../shared/data, of the working directory: a second checkout reads its own data."""
    for candidate in (Path("data"), Path("..") / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return Path("data").resolve()


def results_root(explicit: Optional[str | os.PathLike] = None) -> Path:
    """Where results go: ``explicit`` (--results-root), else $DOGBENCH_RESULTS, else ./results of the working
    directory (never the installed checkout's: a second checkout writes its own)."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    return Path(os.environ.get(RESULTS_ROOT_ENV, "results")).expanduser().resolve()


class NetworkError(Exception):
    """A download host cannot be reached or a transfer failed; the message says which host and why."""


PROBE_TIMEOUT_S = 10.0


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to ``url``'s host; raise NetworkError if that fails. Called before any
    download so that an offline machine fails at once with one line instead of hanging in retries."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise NetworkError(f"cannot reach the download host {parts.hostname} (offline? {e})") from e
