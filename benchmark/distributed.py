"""Several processes (GPUs, machines) working on one experiment, one rule for every stage.

A run is distributed when it is launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set), also
inside SLURM (srun torchrun ...). ``setup`` joins the process group once, with a long timeout: a collective may
wait while rank 0 writes a multi-GB checkpoint. Every stage then divides its work by rank:

- training: Lightning's DDP/FSDP joins the same process group (no re-launch);
- latent caches, reference statistics, sample features: each rank takes its share, the results are combined
  (torchmetrics reduction) or written by their owner, and everybody waits at a barrier before reading them;
- sampling: rank r makes the samples i with i % world == r;
- files that describe finished work (done markers, metrics, runs.csv, the leaderboard) are written by rank 0 only.

A process that Lightning itself re-launched (it sets WORLD_SIZE and LOCAL_RANK but no RANK) gets its global rank
from NODE_RANK and LOCAL_RANK instead of being mistaken for rank 0.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(hours=2)


def env_ranks() -> tuple[int, int, int]:
    """(global rank, world size, local rank) from the launcher's environment; (0, 1, 0) for a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), world, local
    if world > 1 and "LOCAL_RANK" in os.environ:  # a child Lightning started: no RANK of its own
        nodes = int(os.environ.get("NUM_NODES", os.environ.get("LIGHTNING_NUM_NODES", 1)) or 1)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", max(1, world // nodes)))
        return int(os.environ.get("NODE_RANK", 0)) * local_world + local, world, local
    return 0, world, local


def setup(device: str) -> str:
    """Join the process group when launched as several processes (gloo on CPUs, nccl on GPUs) and return this
    process's device (its own GPU under torchrun); a single process is returned ``device`` unchanged."""
    rank, world, local = env_ranks()
    if world <= 1:
        return device
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    return f"cuda:{local}" if cuda else device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the joined process group, else (0, 1)."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextlib.contextmanager
def main_writes() -> Iterator[bool]:
    """``with main_writes() as mine: if mine: write(...)``: rank 0 writes once every rank has arrived (so what it
    writes may sum up their work, e.g. a sample set marked complete), and nobody leaves the block before the write
    is on disk (no rank reads a file another rank is still writing)."""
    barrier()
    try:
        yield is_main()
    finally:
        barrier()


def local_world() -> int:
    """Processes on this machine (for Lightning's ``devices``)."""
    _, world, _ = env_ranks()
    return int(os.environ.get("LOCAL_WORLD_SIZE", world)) if world > 1 else 1
