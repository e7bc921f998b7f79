"""Batch size as a hyperparameter: a batch sampler whose size can change, and the ``BatchSize`` type.

Use it as a DataLoader's ``batch_sampler``; schedule its size with a Scheduler:

    loader = DataLoader(dataset, batch_sampler=ScheduledBatchSampler(len(dataset), batch_size=32, shuffle=True))
    Scheduler({BatchSize: Schedule([0, 5], [32, 256], anneal="exp")}, per="epoch", name="BatchSizeScheduler")

An epoch is still one pass over the data: every index is drawn exactly once per epoch whatever the sizes, so a
larger batch means fewer steps in that epoch. A "step" stays one optimizer step = one batch.

When a change takes effect:

- per epoch (``Scheduler(per="epoch")``, applied at ``before_epoch``, before the Learner reads the epoch's
  length and before the DataLoader iterator exists): exactly in that epoch, with or without workers;
- per step (applied at ``before_batch`` of batch k): the loader has already produced batch k, and a loader with
  ``num_workers=w`` workers also holds ``prefetch_factor * w`` batches' indices drawn ahead (2w by default), so the
  new size first shows at batch ``k + 1`` with ``num_workers=0`` and at ``k + 1 + prefetch_factor * w`` with
  workers. ``len(loader)`` read at the start of the epoch is then only the epoch's length at the size it started
  with. Prefer per-epoch batch-size schedules; ``tests/test_scheduling_batch_size.py`` pins both behaviours.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._validate import whole_number
from .hyperparams import Domain, HyperParameter


class ScheduledBatchSampler(torch.utils.data.Sampler):
    """Yield lists of indices in batches of ``batch_size``, read afresh for every batch.

    Args:
        n: the dataset's length.
        batch_size: the starting batch size (>= 1).
        shuffle: draw a new permutation at each ``iter()``, from ``generator`` or torch's global RNG (so
            checkpoints that restore the RNG replay it, like ``RandomSampler``).
        drop_last: drop a last batch smaller than the batch size at that point.
        generator: an optional ``torch.Generator`` for the permutation.

    A checkpoint taken inside a pass holds the sizes of the batches drawn in it (:meth:`pass_state`, run-length
    coded): a resume draws the pass again with those sizes, so the batches a schedule had made smaller or larger
    come out as they did, and the ones after them too. (Not ``state_dict``: torchdata's ``StatefulDataLoader``
    would take a sampler with one for a sampler that restores its own place, and stop skipping.)

    Raises:
        ValueError: an ``n`` or ``batch_size`` that is not a whole number >= 1 (also when the batch size is set
            later).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        whole_number("ScheduledBatchSampler", "n", n)  # the dataset's length
        for flag, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise TypeError(f"ScheduledBatchSampler({flag}={value!r}): pass True or False")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"ScheduledBatchSampler(generator={generator!r}): pass a torch.Generator or None")
        self.n, self.shuffle, self.drop_last, self.generator = n, shuffle, drop_last, generator
        self.batch_size = batch_size
        self._drawn: list[list[int]] = []  # [size, count] runs of the batches drawn in the current pass
        self._replay: list[list[int]] = []  # runs to draw the next pass with first (set by load_pass_state)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        whole_number("ScheduledBatchSampler", "batch_size", value)
        self._batch_size = value

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the permutation is drawn when the first batch is, as torch's RandomSampler does, so an
        # iterator made and dropped (torchdata makes one to load a state into) draws nothing.
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        yield from self._batches(order)

    def _batches(self, order: list[int]) -> Iterator[list[int]]:
        """Cut ``order`` into batches of the size in force when each is drawn (after any sizes to replay)."""
        replay, self._replay = [list(run) for run in self._replay], []
        drawn: list[list[int]] = []
        self._drawn = drawn
        start = 0
        while start < self.n:
            if replay:
                size = replay[0][0]
                replay[0][1] -= 1
                if not replay[0][1]:
                    del replay[0]
            else:
                size = self._batch_size  # read per batch: a change applies to the next batch drawn
            if self.drop_last and start + size > self.n:
                return
            if drawn and drawn[-1][0] == size:
                drawn[-1][1] += 1
            else:
                drawn.append([size, 1])
            yield order[start : start + size]
            start += size

    def pass_state(self) -> dict[str, Any]:
        """The sizes of the batches drawn in the current pass, as ``[size, count]`` runs."""
        return {"drawn": [list(run) for run in self._drawn]}

    def check_pass_state(self, state: Any) -> None:
        """Raise ``ValueError`` unless ``state`` (from :meth:`pass_state`) can be drawn again from this sampler.

        Raises:
            ValueError: ``state`` is not ``{"drawn": [[size, count], ...]}`` with whole numbers >= 1, or its
                batches need more samples than this sampler's ``n`` (the data shrank).
        """
        runs = state.get("drawn") if isinstance(state, dict) else None
        if not isinstance(runs, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and v >= 1 for v in r) for r in runs
        ):
            raise ValueError(f"ScheduledBatchSampler state {state!r}: expected {{'drawn': [[size, count], ...]}}")
        batches, samples = sum(count for _, count in runs), sum(size * count for size, count in runs)
        if runs and samples - runs[-1][0] >= self.n:  # every batch but the last full, the last at least one sample
            raise ValueError(
                f"the checkpointed pass drew {batches} batches of {samples} samples in all, more than this "
                f"sampler's n={self.n} holds; resume with the checkpointed run's data"
            )

    def load_pass_state(self, state: dict[str, Any]) -> None:
        """Draw the next pass's first batches with the sizes in ``state`` (a checkpoint's pass, drawn again).

        Raises:
            ValueError: as :meth:`check_pass_state`.
        """
        self.check_pass_state(state)
        self._replay = [list(run) for run in state["drawn"]]

    def __len__(self) -> int:
        """Batches in an epoch at the current batch size."""
        if self.drop_last:
            return self.n // self._batch_size
        return math.ceil(self.n / self._batch_size)


class BatchSize(HyperParameter):
    """The batch size of the training DataLoader's :class:`ScheduledBatchSampler`.

    Values are rounded to the nearest int (halves to even, as ``round``); the rounded value is what is applied
    and what ``Scheduler.history`` records. Domain: a rounded value >= 1, so a schedule reaching 0 is refused
    before training (never clamped).

    Raises:
        TypeError: when the Learner is built, ``train_data`` that is not a DataLoader with a
            :class:`ScheduledBatchSampler` as its ``batch_sampler``.
    """

    writes = ("train_data.batch_sampler",)
    domain = Domain(1.0, why="a batch holds at least one sample")

    def check(self, learner: Any) -> None:
        sampler = getattr(learner.train_data, "batch_sampler", None)
        if not isinstance(sampler, ScheduledBatchSampler):
            raise TypeError(
                f"BatchSize needs train_data to be a DataLoader with batch_sampler=ScheduledBatchSampler(...), "
                f"got train_data={learner.train_data!r} with batch_sampler={sampler!r}"
            )

    def bind(self, learner: Any) -> None:
        self._sampler = learner.train_data.batch_sampler

    def set(self, learner: Any, value: float) -> None:
        self._sampler.batch_size = round(value)

    def applied(self, values: np.ndarray) -> np.ndarray:
        return np.round(values)

    def get(self, learner: Any) -> float:
        return float(learner.train_data.batch_sampler.batch_size)
