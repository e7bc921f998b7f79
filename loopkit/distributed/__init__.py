"""Training on several processes with ``torch.distributed`` (see docs/distributed.md).

The rank helpers work without a process group (rank 0 of a world of 1), so any writer can ask
``is_main_process()`` unconditionally.
"""

from .ranks import is_distributed, is_main_process, rank, world_size

__all__ = ["is_distributed", "is_main_process", "rank", "world_size"]
