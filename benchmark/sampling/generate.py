"""Fill a sample folder with a sampler: this rank's missing indices, in batches, resumable after a kill.

PNG encoding (zlib, in Pillow's C code, which releases the GIL) runs in a writer thread, so the device samples the
next batch while the previous one is written; at most ``queue_depth`` batches wait in memory. A failure in the
writer (a full disk) is raised in the sampling loop at the next batch, and nothing half-written is left behind
(each PNG is written to a temporary name and renamed).
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from benchmark.devices import device_name
from benchmark.sampling.sampler import Sampler
from benchmark.sampling.writer import SampleFolder

_DONE = object()


class BackgroundWriter:
    """``folder.write`` in a thread; ``write`` blocks only when ``queue_depth`` batches are already waiting."""

    def __init__(self, folder: SampleFolder, queue_depth: int = 2):
        self.folder = folder
        self._queue: queue.Queue = queue.Queue(maxsize=queue_depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="png-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self.folder.write(*item)
                except BaseException as e:  # re-raised in the sampling thread, which owns the error handling
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, indices, images: np.ndarray, labels=None) -> None:
        self._raise()
        self._queue.put((list(indices), images, labels))

    def close(self) -> None:
        """Wait until every queued batch is written; raise the writer's error, if any."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise()


def generate_samples(sampler: Sampler, folder: SampleFolder, batch_size: int = 64, rank: int = 0, world_size: int = 1,
                     progress: bool = True, queue_depth: int = 2) -> int:
    """Make every missing sample of this rank's share; returns how many were made. Safe to rerun after a kill."""
    todo = folder.missing(rank, world_size)
    bar = tqdm(total=len(todo), desc=f"sampling {folder.root.name}", unit="img", disable=not progress or not todo)
    writer = BackgroundWriter(folder, queue_depth)
    made, seconds = 0, 0.0
    try:
        for start in range(0, len(todo), batch_size):
            indices = todo[start:start + batch_size]
            began = time.perf_counter()
            images, labels = sampler.sample(indices)  # returns host arrays: the device's work is done
            seconds += time.perf_counter() - began
            writer.write(indices, images, labels)
            made += len(indices)
            bar.update(len(indices))
    finally:
        writer.close()  # also after an interruption: the batches already made are kept
        bar.close()
        folder.record_timing(made, seconds, device_name(sampler.device), sampler.flops_per_image())
    if world_size == 1:
        folder.mark_complete()
    return len(todo)
