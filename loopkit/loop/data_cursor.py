"""Where the loop stands in its train data, and how a resume gets back there.

Two layouts of the loop over the data:

- **epochs** (the default): each loop epoch is one pass over ``train_data``, begun with ``iter()`` at the train
  phase's start.
- **a stream** (``fit(valid_every=N)``): one pass continues across loop epochs of ``N`` batches and a new pass
  begins whenever one runs out (an endless ``IterableDataset`` never runs out). A sampler with ``set_epoch``
  (``DistributedSampler``, loopkit's) is set to the pass's number before each pass, so passes differ.

A checkpoint taken while a pass is open records, for each rank, the RNG when the pass began (the ``rng``
entry's ``phase_start``) and the batches taken from it (``data``'s ``batches``). The random generators the data
holds itself (``DataLoader(generator=...)``, a sampler's ``generator``), which the process's RNG snapshots do
not cover, are recorded too, when the pass began and at the checkpoint (``data``'s ``generators``). A resume
gets back to that point in the cheapest exact way the data allows:

1. **Stateful data** (``state_dict()``/``load_state_dict()`` on ``train_data``, as torchdata's
   ``StatefulDataLoader`` has): its state is saved with the checkpoint and loaded back; nothing is replayed.
2. **A torch ``DataLoader`` over a map-style dataset, without worker processes**: the pass's sampler is drawn
   again from the recorded RNG and its first batches of indices are skipped; no sample is loaded or collated.
   A sampler with ``pass_state``/``load_pass_state`` (``ScheduledBatchSampler``: the batch sizes a schedule gave
   the pass) has that state saved with the checkpoint and loaded before the pass is drawn again, on every path.
3. **Anything else** (worker processes, whose random state depends on every sample they loaded; an
   ``IterableDataset``; a plain iterable): the pass is replayed from the recorded RNG and its first batches are
   drawn and dropped, so each costs what loading it costs.

Every path leaves the process's RNG as it found it: the Learner restores the checkpoint's RNG afterwards.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..resume.data import data_generators, fit_problems, is_stateful, stateful_samplers
from ..resume.file import CheckpointError
from ..resume.rng import capture_rng_state, restore_rng_state
from .checks import length

_END = object()


def set_epoch(loader: object, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler and batch sampler where they have one."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        set_sampler_epoch = getattr(sampler, "set_epoch", None)
        if callable(set_sampler_epoch):
            set_sampler_epoch(epoch)


def can_seek(data: object) -> bool:
    """Whether a pass over ``data`` can skip batches without loading them (see the module docstring, path 2)."""
    return type(data) is DataLoader and not isinstance(data.dataset, IterableDataset) and data.num_workers == 0


class DataCursor:
    """The train data's open pass: the RNG when it began and the batches taken from it.

    ``per_epoch`` is None for epochs, ``N`` for a stream of ``N`` batches per loop epoch. ``data`` is read from
    the learner when a pass begins, so a callback that replaces ``train_data`` in ``before_fit`` (``Distributed``
    shards it) is seen.
    """

    def __init__(self, learner: Any, per_epoch: int | None) -> None:
        self._learner, self.per_epoch = learner, per_epoch
        self._it: Iterator | None = None
        self.rng_at_start: dict[str, Any] | None = None  # RNG when the open pass began
        self.taken = 0  # batches taken from the open pass (a stream's; an epoch's is the loop position)
        self._passes = 0  # passes begun (a stream sets its sampler's epoch to this)
        self._generators_at_start: list[torch.Tensor] | None = None  # the data's own generators then
        self._pending: tuple[Any, Mapping[str, Any]] | None = None  # a resume's (rng at start, data entry)
        self._epoch_length: int | None = None  # the resumed epoch's length when it first began
        self._check_at_open = False

    # --------------------------------------------------------------------------------------------- resuming
    def resume(self, rng_at_start: Any, entry: Mapping[str, Any], epoch_length: int | None, *, check: bool) -> None:
        """Continue, at the next pass opened, from a checkpoint's RNG at the pass's start and this rank's data
        entry (see :meth:`position`); ``epoch_length``: the resumed epoch's batches, as counted when it began
        (None: count them again). ``check``: check the entry against the train data when the pass opens (a
        callback replaces the train data in ``before_fit``, after the checkpoint was checked)."""
        self._passes = entry["passes"]
        self._pending = (rng_at_start, entry)
        self._epoch_length, self._check_at_open = epoch_length, check
        data = self._learner.train_data
        foreign = [
            s
            for s in (getattr(data, "batch_sampler", None), getattr(data, "sampler", None))
            if s is not None and not type(s).__module__.startswith("torchdata") and not is_stateful(s)
        ]
        if is_stateful(data) and foreign and entry["batches"]:
            warnings.warn(
                f"train_data saves its own place, but its sampler {type(foreign[0]).__name__} does not: the data "
                "gets back into the pass by drawing that sampler again when the first batch is fetched, from the "
                "random state of that moment, so a shuffling sampler's order will differ from the uninterrupted "
                "run's; use the loader's own shuffle (shuffle=True), or a plain DataLoader, for an exact resume",
                stacklevel=4,
            )
        if getattr(data, "persistent_workers", False) and getattr(data, "num_workers", 0) > 0:
            warnings.warn(
                "train_data keeps its worker processes across epochs (persistent_workers=True): their random "
                "state carries from epoch to epoch and no checkpoint holds it, so the resumed run draws other "
                "random numbers in the workers (augmentations) than an uninterrupted one would; it is exact only "
                "if the dataset draws none. persistent_workers=False makes the resume exact",
                stacklevel=4,
            )

    def close(self, *, stream_too: bool) -> None:
        """Let go of the open pass (a DataLoader's iterator shuts its worker processes down when dropped): an
        epoch's at the end of its train phase, however it ended; a stream's (``stream_too``) when the fit ends."""
        if self.per_epoch is None or stream_too:
            self._it = None

    def epoch_length(self) -> int | None:
        """The batches of the loop epoch about to begin: ``valid_every`` in a stream, else the data's length
        (``None`` without one), or for an epoch resumed mid-way its length as counted when it first began (a
        batch-size schedule may have changed the data's length since)."""
        if self.per_epoch is not None:
            return self.per_epoch
        if self._epoch_length is not None:
            return self._epoch_length
        return length(self._learner.train_data)

    def is_open(self, loop_batch: int) -> bool:
        """Whether a pass is open at a checkpoint taken ``loop_batch`` batches into a loop epoch (an epoch's pass
        closes with its train phase; a stream's stays open across loop epochs)."""
        return (self._it is not None) if self.per_epoch is not None else loop_batch > 0

    def position(self, loop_batch: int) -> dict[str, Any]:
        """This rank's ``data`` entry for a checkpoint taken ``loop_batch`` batches into a loop epoch; the RNG
        when the open pass began goes in the ``rng`` entry (``phase_start``: :attr:`rng_at_start`)."""
        data = self._learner.train_data
        taken = self.taken if self.per_epoch is not None else loop_batch
        open_pass = self.is_open(loop_batch)
        return {
            "batches": taken if open_pass else 0,
            "passes": self._passes,
            "state": data.state_dict() if is_stateful(data) else None,
            "generators": {
                "now": [g.get_state() for g in data_generators(data)],
                "at_start": self._generators_at_start if open_pass else None,
            },
            "samplers": [s.pass_state() for s in stateful_samplers(data)] if open_pass else None,
        }

    # --------------------------------------------------------------------------------------------- iterating
    def epoch(self, first: int) -> Iterable:
        """The batches of the loop epoch that begins at batch ``first`` (0, or where a resume left off)."""
        if self.per_epoch is None:
            self._open()
            return self._it  # type: ignore[return-value]
        if self._it is None and self._pending is not None:
            self._open()
        return itertools.islice(self._stream(), self.per_epoch - first)

    def _stream(self) -> Iterator:
        while True:
            if self._it is None:
                self._open()
            iterator: Any = self._it
            try:
                batch = next(iterator)
            except StopIteration:
                if self.taken == 0:
                    raise ValueError(f"train_data yielded no batches: {self._learner.train_data!r}") from None
                self._it = None
                continue
            self.taken += 1
            yield batch

    def _open(self) -> None:
        data = self._learner.train_data
        pending, self._pending = self._pending, None
        if self.per_epoch is not None:  # a stream: each pass its own sampler epoch (the open one's again on resume)
            reopening = pending is not None and pending[0] is not None
            set_epoch(data, self._passes - 1 if reopening else self._passes)
            self._passes += 0 if reopening else 1
        if pending is None:
            self._begin(data)
            return
        rng_at_start, entry = pending
        self._epoch_length = None
        if self._check_at_open:
            problems = fit_problems(entry, data, length(data))
            if problems:
                raise CheckpointError(
                    "the checkpoint does not fit the train data this fit uses (set up in before_fit): "
                    + "; ".join(problems)
                )
        state, generators = entry["state"], entry.get("generators")
        if rng_at_start is None:  # saved with no pass open (an epoch's end): the data as it was then, a new pass
            _set_generators(data, generators and generators["now"])
            if state is not None and is_stateful(data) and not _only_finished_pass(state):
                data.load_state_dict(state)
            self._begin(data)
            return
        # The pass was open: begin it again from the random state it began from (its shuffle is drawn as it
        # was), get back to where it stood, then put every random state back as at the checkpoint.
        now = capture_rng_state()
        restore_rng_state(rng_at_start)
        _set_generators(data, generators and generators["at_start"])
        if state is not None and is_stateful(data):
            data.load_state_dict(state)  # the data skips the finished batches itself
            self._it = iter(data)
        else:
            for sampler, sampler_state in zip(stateful_samplers(data), entry.get("samplers") or ()):
                sampler.load_pass_state(sampler_state)  # e.g. the batch sizes a schedule gave the pass
            self._it = _skipped(data, entry["batches"])
        _set_generators(data, generators and generators["now"])
        self.rng_at_start, self.taken = rng_at_start, entry["batches"]
        self._generators_at_start = generators and generators["at_start"]
        restore_rng_state(now)

    def _begin(self, data: Any) -> None:
        """Begin a new pass over ``data``, noting the random state it begins from."""
        self.rng_at_start, self.taken = capture_rng_state(), 0
        self._generators_at_start = [g.get_state() for g in data_generators(data)]
        self._it = iter(data)


def _only_finished_pass(state: Any) -> bool:
    """Whether a stateful loader's state (torchdata's) says only that its pass ran out, with no dataset or
    fetcher state: its samplers' generators (saved by loopkit) then say all there is, and a fresh pass begins as
    the uninterrupted run's did (loading it would begin the pass with other global random draws)."""
    return (
        isinstance(state, Mapping)
        and state.get("_iterator_finished") is True
        and state.get("dataset_state") is None
        and state.get("fetcher_state") is None
    )


def _set_generators(data: object, states: list[torch.Tensor] | None) -> None:
    if states is not None:
        for generator, state in zip(data_generators(data), states):
            generator.set_state(state)


def _skipped(data: Any, n: int) -> Iterator:
    """A new pass over ``data`` without its first ``n`` batches (skipped unloaded where the data can seek).

    The random draws happen in the original pass's order: ``iter()`` draws the loader's base seed, then the
    sampler draws its permutation when its first batch of indices is taken.
    """
    if not can_seek(data):
        iterator = iter(data)
        _drop_first(iterator, n, f"this train data ({type(data).__name__})")
        return iterator
    by_batch = data.batch_sampler is not None  # automatic batching off: the sampler yields one index a "batch"
    skip = _SkipFirst(data.batch_sampler if by_batch else data.sampler, n)
    kwargs: dict[str, Any] = {"batch_sampler": skip} if by_batch else {"sampler": skip, "batch_size": None}
    loader = DataLoader(
        data.dataset,
        collate_fn=data.collate_fn,
        pin_memory=data.pin_memory,
        timeout=data.timeout,
        worker_init_fn=data.worker_init_fn,
        generator=data.generator,
        pin_memory_device=data.pin_memory_device,
        in_order=data.in_order,
        **kwargs,
    )
    iterator = iter(loader)
    skip.skip()
    return iterator


def _drop_first(iterator: Iterator, n: int, what: str) -> None:
    """Take and drop ``n`` items of ``iterator``; ``ValueError`` naming ``what`` if it ends before."""
    for done in range(n):
        if next(iterator, _END) is _END:
            raise ValueError(
                f"the checkpoint was taken {n} batches into a pass over the train data, but {what} ends after "
                f"{done}; resume with the checkpointed run's data"
            )


class _SkipFirst:
    """A sampler over ``inner`` whose iterator drops the first ``n`` items when :meth:`skip` is called."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n = inner, n
        self._it: Iterator | None = None

    def __iter__(self) -> Iterator:
        self._it = iter(self.inner)
        return self._it

    def skip(self) -> None:
        """Draw and drop the first ``n`` items of the iterator ``iter()`` made (only indices: nothing loads)."""
        if self._it is None:
            raise RuntimeError("_SkipFirst.skip() before iter()")
        _drop_first(self._it, self.n, "a pass over this train data")

    def __len__(self) -> int:
        return max(len(self.inner) - self.n, 0)
