"""Which samples each rank sees: the train split (global batches cut into equal per-rank parts) and an
unpadded validation split (every sample counted exactly once).

The batch size a user gives (a DataLoader's ``batch_size``, or what a ``BatchSize`` schedule says) is the
**global** batch: with ``W`` ranks each takes ``batch_size / W`` samples of every batch, so one process and
``W`` processes take the same optimizer steps over the same samples. A global batch that ``W`` does not
divide is an error that says so.

Train, plain DataLoader: torch's :class:`~torch.utils.data.DistributedSampler` (rank ``r`` takes positions
``r, r + W, ...`` of the epoch's permutation ``randperm(n, seed + epoch)``) with per-rank batches of
``batch_size / W``; global batch ``k`` is then exactly positions ``k*B .. (k+1)*B - 1`` of the permutation.
DistributedSampler pads the epoch to a multiple of ``W`` by repeating its first samples, as torch does.

Train, ``ScheduledBatchSampler``: :class:`ShardedBatchSampler` cuts each global batch (size read afresh per
batch, as a schedule may change it) into ``W`` strided parts. A last batch shorter than the global size is
split as evenly as possible (parts differ by at most one sample; one with fewer samples than ranks is dropped).

Validation: :class:`UnpaddedShard` gives rank ``r`` positions ``r, r + W, ...`` of ``range(n)``, no padding,
so summed over ranks every sample counts exactly once (ranks may differ by one sample).

Example (what rank 1 of 2 sees of 10 samples, global batch 4, no shuffle):
    >>> [list(b) for b in ShardedBatchSampler(10, 4, rank=1, world_size=2)]
    [[1, 3], [5, 7], [9]]
    >>> list(UnpaddedShard(5, rank=1, world_size=2))
    [1, 3]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from ..scheduling.batch_size import ScheduledBatchSampler


def check_divisible(batch_size: int, world_size: int, what: str) -> None:
    """Raise ``ValueError`` unless the global ``batch_size`` splits evenly over ``world_size`` ranks."""
    if batch_size % world_size:
        raise ValueError(
            f"the global batch size {batch_size} ({what}) is not divisible by the world size {world_size}: every "
            f"rank must take an equal part of each batch; use a multiple of {world_size} "
            f"(e.g. {max(world_size, batch_size - batch_size % world_size)})"
        )


class ShardedBatchSampler(ScheduledBatchSampler):
    """A :class:`ScheduledBatchSampler` whose ``batch_size`` is the global batch, yielding this rank's part.

    Every rank draws the same permutation (``randperm(n)`` from a generator seeded with ``seed + epoch``; call
    :meth:`set_epoch` each epoch) and takes positions ``rank, rank + W, ...`` of each global batch.

    Args:
        n: the dataset's length.
        batch_size: the starting global batch size, a multiple of ``world_size``.
        shuffle: as for :class:`ScheduledBatchSampler`.
        drop_last: as for :class:`ScheduledBatchSampler`.
        rank: this process's rank, in ``[0, world_size)``.
        world_size: the number of processes.
        seed: the shuffle's seed, the same on every rank.

    Raises:
        ValueError: a global batch size (at construction or as set by a schedule) not divisible by ``world_size``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        super().__init__(n, batch_size, shuffle=shuffle, drop_last=drop_last)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        ScheduledBatchSampler.batch_size.fset(self, value)  # type: ignore[attr-defined]
        check_divisible(value, self.world_size, "the batch size of a ScheduledBatchSampler")

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutation from the next ``iter()`` on."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        for batch in self._batches(order):  # each global batch at the size in force when it is drawn
            if len(batch) >= self.world_size:  # a tail shorter than the world would leave a rank empty
                yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        full, tail = divmod(self.n, self._batch_size)
        return full + (tail > 0 and not self.drop_last and tail >= self.world_size)


class UnpaddedShard(Sampler):
    """Positions ``rank, rank + W, ...`` of ``range(n)``: a split of ``n`` samples with nothing repeated."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def shard_train_loader(loader: object, *, rank: int, world_size: int, seed: int) -> DataLoader:
    """This rank's train loader: ``loader`` rebuilt with its part of every global batch.

    Raises:
        TypeError: data loopkit cannot split (not a DataLoader, an IterableDataset, a custom sampler).
        ValueError: a global batch size not divisible by ``world_size``; a user's DistributedSampler built for
            another world size.
    """
    loader = _check_loader(loader, "train_data")
    if isinstance(loader.sampler, DistributedSampler):  # the user's own: used as given
        _check_user_sampler(loader.sampler, rank, world_size)
        return loader
    batches = loader.batch_sampler
    if isinstance(batches, ShardedBatchSampler):
        return loader
    if isinstance(batches, ScheduledBatchSampler):
        sharded = ShardedBatchSampler(
            batches.n,
            batches.batch_size,
            shuffle=batches.shuffle,
            drop_last=batches.drop_last,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        return _rebuild(loader, batch_sampler=sharded)
    inner = getattr(batches, "sampler", None)
    if type(batches) is not BatchSampler or not isinstance(inner, (RandomSampler, SequentialSampler)):
        raise TypeError(
            f"Distributed cannot split train_data's sampling (batch_sampler={batches!r}, sampler={inner!r}) over "
            "ranks: give the DataLoader a torch DistributedSampler of your own (loopkit calls its set_epoch), "
            "or split the data yourself and pass Distributed(shard_data=False)"
        )
    check_divisible(batches.batch_size, world_size, "the train DataLoader's batch_size")
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=isinstance(inner, RandomSampler),
        seed=seed,
    )
    return _rebuild(loader, sampler=sampler, batch_size=batches.batch_size // world_size, drop_last=batches.drop_last)


def shard_valid_loader(loader: object, *, rank: int, world_size: int) -> DataLoader:
    """This rank's validation loader: an unpadded split, batches of the loader's own ``batch_size``.

    Raises:
        TypeError: as :func:`shard_train_loader`.
        ValueError: fewer validation samples than ranks (a rank would have none).
    """
    loader = _check_loader(loader, "valid_data")
    if isinstance(loader.sampler, (DistributedSampler, UnpaddedShard)):
        _check_user_sampler(loader.sampler, rank, world_size)
        return loader
    batches = loader.batch_sampler
    inner = getattr(batches, "sampler", None)
    if isinstance(batches, ScheduledBatchSampler):
        n, size, drop_last = batches.n, batches.batch_size, batches.drop_last
    elif type(batches) is BatchSampler and isinstance(inner, (RandomSampler, SequentialSampler)):
        n, size, drop_last = len(loader.dataset), batches.batch_size, batches.drop_last  # type: ignore[arg-type]
    else:
        raise TypeError(
            f"Distributed cannot split valid_data's sampling (batch_sampler={batches!r}) over ranks: give it a "
            "sampler of your own that splits without repeats, or pass Distributed(shard_data=False)"
        )
    if n < world_size:
        raise ValueError(
            f"valid_data has {n} samples for {world_size} ranks: every rank needs at least one; "
            "use a larger validation set or fewer processes"
        )
    # Validation order does not change its sums, so a shuffled validation loader is split in order.
    return _rebuild(
        loader, sampler=UnpaddedShard(n, rank=rank, world_size=world_size), batch_size=size, drop_last=drop_last
    )


def _check_loader(loader: object, name: str) -> DataLoader:
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"Distributed splits a torch DataLoader over ranks, but {name} is {type(loader).__name__}: {loader!r}; "
            "wrap the data in a DataLoader, or split it yourself and pass Distributed(shard_data=False)"
        )
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            f"{name} reads an IterableDataset, which loopkit cannot split by index: make each rank's stream "
            "yield its own samples (torch.utils.data.get_worker_info and loopkit.distributed.rank()) and pass "
            "Distributed(shard_data=False)"
        )
    return loader


def _check_user_sampler(sampler: object, rank: int, world_size: int) -> None:
    replicas = getattr(sampler, "num_replicas", getattr(sampler, "world_size", world_size))
    if replicas != world_size or getattr(sampler, "rank", rank) != rank:
        raise ValueError(
            f"the DataLoader's {type(sampler).__name__} was built for rank {getattr(sampler, 'rank', '?')} of "
            f"{replicas}, but this process is rank {rank} of {world_size}; build it with num_replicas="
            f"{world_size}, rank={rank}, or let Distributed build one"
        )


def _rebuild(loader: DataLoader, **changes: object) -> DataLoader:
    """A DataLoader like ``loader`` in every setting but ``changes`` (its sampling is fixed at construction)."""
    settings = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if "in_order" in DataLoader.__init__.__code__.co_varnames:
        settings["in_order"] = loader.in_order
    settings.update(changes)
    return DataLoader(loader.dataset, **settings)


__all__ = [
    "ShardedBatchSampler",
    "UnpaddedShard",
    "check_divisible",
    "shard_train_loader",
    "shard_valid_loader",
]
