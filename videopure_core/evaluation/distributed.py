"""Sharding clips across processes with torch.distributed (launched by `torchrun`; gloo, so CPU works too).

Each rank evaluates clips rank, rank + world_size, ... and appends to its own records file; after a barrier rank 0
merges the files and writes the reports. Without torchrun's environment (WORLD_SIZE unset or 1) everything runs
in one process and no process group is created.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """(rank, world_size); joins torchrun's process group (gloo) when WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        # gloo only coordinates (barriers); no tensors travel, so it serves CPU and GPU runs alike. Ranks may
        # finish their shards hours apart, hence the long timeout.
        dist.init_process_group("gloo", timeout=timedelta(days=7))
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str) -> str:
    """cuda -> cuda:<LOCAL_RANK> under torchrun (one GPU per process); anything else unchanged."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Whether this process is rank 0 (or the only process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
