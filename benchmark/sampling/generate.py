"""Fill a sample folder with a sampler: this rank's missing indices, in batches, resumable after a kill."""
from __future__ import annotations

from tqdm.auto import tqdm

from benchmark.sampling.sampler import Sampler
from benchmark.sampling.writer import SampleFolder


def generate_samples(sampler: Sampler, folder: SampleFolder, batch_size: int = 64, rank: int = 0, world_size: int = 1,
                     progress: bool = True) -> int:
    """Make every missing sample of this rank's share; returns how many were made. Safe to rerun after a kill."""
    todo = folder.missing(rank, world_size)
    bar = tqdm(total=len(todo), desc=f"sampling {folder.root.name}", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        indices = todo[start:start + batch_size]
        images, _ = sampler.sample(indices)
        folder.write(indices, images)
        bar.update(len(indices))
    bar.close()
    if world_size == 1:
        folder.mark_complete()
    return len(todo)
