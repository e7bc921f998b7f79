"""Training on several processes with ``torch.distributed`` (see docs/distributed.md).

The rank helpers and collectives work without a process group (rank 0 of a world of 1), so any writer can ask
``is_main_process()`` unconditionally. This package's ``__init__`` imports only those torch-only layers, so
the loop may use them; the :class:`Distributed` callback (which builds on the scheduling layer) and the
samplers load when first named.
"""

from typing import Any

from .collectives import all_gather, all_reduce_sum, any_rank, min_over_ranks
from .ranks import is_distributed, is_main_process, rank, world_size

__all__ = [
    "Distributed",
    "destroy_process_group",
    "is_distributed",
    "is_main_process",
    "rank",
    "world_size",
    "all_reduce_sum",
    "any_rank",
    "min_over_ranks",
    "all_gather",
]


def __getattr__(name: str) -> Any:
    # Lazily: the callback imports loopkit.loop and loopkit.scheduling, which sit above this layer.
    if name in ("Distributed", "destroy_process_group"):
        from . import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'loopkit.distributed' has no attribute {name!r}")
