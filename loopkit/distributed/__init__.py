"""The ground floor of distributed training: who am I (rank, world size, the writing process) and the few
collectives every floor may ask for (see docs/distributed.md).

Each works without a process group (rank 0 of a world of 1), so any writer can ask ``is_main_process()``
unconditionally. The :class:`~loopkit.callbacks.Distributed` callback, which builds the process group and
shards the data, lives with the other callbacks.
"""

from .collectives import all_gather, all_reduce_sum, any_rank, min_over_ranks
from .ranks import is_distributed, is_main_process, rank, world_size

__all__ = [
    "is_distributed",
    "is_main_process",
    "rank",
    "world_size",
    "all_reduce_sum",
    "any_rank",
    "min_over_ranks",
    "all_gather",
]
