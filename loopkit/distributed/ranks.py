"""Who am I in a distributed run: rank, world size, and whether this process is the one that writes.

Each answer comes from ``torch.distributed`` when a process group is initialised, and is the single-process
answer otherwise (rank 0 of a world of 1, the main process), so callers never have to ask whether a run is
distributed before asking.

Example:
    >>> rank(), world_size(), is_main_process()   # no process group here
    (0, 1, True)
"""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank in the default process group; 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes in the default process group; 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on global rank 0 (and in a run without a process group): the one process that writes files."""
    return rank() == 0
