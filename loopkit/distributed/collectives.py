"""The few collectives loopkit itself runs, each a no-op (or the single-process answer) without a process group.

loopkit adds no collective to a training step: what it adds runs at the ends of phases and epochs (one
all-reduce of the metric sums, one agreement per phase-level event) and when a checkpoint is written (one
gather of the RNG states). Each is written here once, so a reader can count them.

Example (a single process: every call returns what a world of one would):
    >>> import torch
    >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    >>> all_gather({"rank": 0})
    [{'rank': 0}]
    >>> any_rank(False), min_over_ranks(3)
    (False, 3)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .ranks import is_distributed, world_size


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over every rank, in place, and return it (the same tensor without a process group).

    Gloo reduces CPU tensors and NCCL device tensors; a tensor is reduced where it lives.
    """
    if is_distributed() and world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device | str | None = None) -> bool:
    """True on every rank when ``flag`` is true on at least one (one all-reduce of one integer).

    Use it for a decision taken from rank-local values (a loss, a clock) that every rank must take alike::

        if any_rank(not math.isfinite(local_loss)):
            raise CancelFit
    """
    if not (is_distributed() and world_size() > 1):
        return bool(flag)
    value = torch.tensor([int(bool(flag))], dtype=torch.int64, device=device or collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def min_over_ranks(value: int) -> int:
    """The smallest of every rank's ``value`` (one all-reduce of one integer); ``value`` without a group."""
    if not (is_distributed() and world_size() > 1):
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, as a list indexed by rank, on every rank (``[obj]`` without a process group).

    A collective: every rank must call it. Objects are pickled (``torch.distributed.all_gather_object``), so
    keep them small: loopkit gathers RNG states and metric sums when a checkpoint is taken.
    """
    if not (is_distributed() and world_size() > 1):
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def collective_device() -> torch.device:
    """Where the default group's small tensors must live: this rank's CUDA device under NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
