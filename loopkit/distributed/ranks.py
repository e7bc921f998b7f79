"""Who am I in a distributed run: rank, world size, and whether this process is the one that writes.

Each answer comes from the initialised default process group; before one exists (a script launched by
``torchrun`` that has not built its group yet, or a logger created before ``fit``) it comes from the
variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``), and without either it is the single-process answer
(rank 0 of a world of 1, the main process). Callers never have to ask whether a run is distributed first.

Example:
    >>> rank(), world_size(), is_main_process()   # no process group and no torchrun here
    (0, 1, True)
"""

from __future__ import annotations

import os

import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank: the default group's, else torchrun's ``RANK``, else 0."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    """The number of processes: the default group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    if is_distributed():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on global rank 0 (and in a run without torchrun): the one process that writes files."""
    return rank() == 0
