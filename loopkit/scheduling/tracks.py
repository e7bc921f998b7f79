"""Tracks: a hyperparameter's values over one phase, evaluated a block of steps at a time, and the apply loop.

The Scheduler evaluates each schedule a block of steps at a time (one vectorised call per :data:`BLOCK` steps
per schedule), so a step costs a list lookup and one ``set`` per hyperparameter, and neither its memory before
the first step nor its cost per step depends on the epoch's length (``benchmarks/bench_scheduler.py``). A
block is checked against the targets' domains before any of its values is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..loop.callback import UndeclaredWriteError
from . import clock
from .domain import check_written
from .hyperparams import HyperParameter

BLOCK = 1024  # steps evaluated per vectorised call: large enough to amortise numpy's call cost (~10 us)


def apply(tracks: list[Track], learner: Any, b: int, s: int, k: int) -> None:
    """Set every hyperparameter to its value at batch ``b`` / step ``s`` of this phase, and record it as the value
    of step (or epoch) ``k``; the hot path, once per optimizer step."""
    track = None
    try:
        for track in tracks:
            i = s if track.by_step else b
            j = i - track.start
            value = track.block[j] if 0 <= j < track.size else track.refill(i)
            track.set(learner, value)
            # history[k] is the value step k used: a value applied for a step that was then skipped is replaced.
            track.history[k:] = (value,)
    except UndeclaredWriteError as error:
        raise _undeclared(track, error) from None


class Track:
    """One hyperparameter's values in the current phase, evaluated :data:`BLOCK` steps at a time.

    ``timeline`` is ``(offset, scale, origin, divisor, limit)``: index ``i`` of the phase (a step since the phase
    began, or a batch) is at schedule time ``offset + (origin + i / divisor) * scale``
    (:func:`~loopkit.scheduling.clock.schedule_times`); ``limit`` (the phase's length when known) caps a block so
    that a short epoch computes no more than it uses. A simulated track writes and checks nothing.
    """

    __slots__ = (
        "block",
        "bound",
        "by_step",
        "divisor",
        "history",
        "hp",
        "limit",
        "offset",
        "origin",
        "scale",
        "schedule",
        "set",
        "simulated",
        "size",
        "start",
    )

    def __init__(
        self,
        hp: HyperParameter,
        schedule: Any,
        bound: Any,
        timeline: tuple,
        by_step: bool,
        history: list[float],
        simulated: bool = False,
    ) -> None:
        self.hp, self.schedule, self.bound, self.by_step, self.history = hp, schedule, bound, by_step, history
        self.offset, self.scale, self.origin, self.divisor, self.limit = timeline
        self.simulated = simulated
        self.set = _write_nothing if simulated else hp.set
        self.block: list[float] = []
        self.start, self.size = 0, 0

    def refill(self, i: int) -> float:
        """Evaluate the block that starts at index ``i``, check it against the targets' domains, return its
        first value."""
        size = BLOCK if self.limit is None or i >= self.limit else min(BLOCK, self.limit - i)
        index = np.arange(i, i + size, dtype=np.float64)
        t = clock.schedule_times(index, self.origin, self.divisor, self.offset, self.scale)
        values = self.hp.applied(np.asarray(self.bound.table(t), dtype=np.float64))
        if not self.simulated:
            check_written(self.hp, self.schedule, values, t, self.bound.axis)
        self.block, self.start, self.size = values.tolist(), i, size
        return self.block[0]


def _write_nothing(learner: Any, value: float) -> None:
    """A simulated track's ``set``."""


def _undeclared(track: Track | None, error: UndeclaredWriteError) -> UndeclaredWriteError:
    if track is None:  # not raised by a hyperparameter's set
        return error
    kind = type(track.hp).__name__
    name = getattr(error, "name", None) or "the attribute"
    return UndeclaredWriteError(
        f"{kind}.set rebound learner.{name}, which {kind} does not declare; add {name!r} to {kind}.writes "
        "(a Scheduler's writes are derived from its hyperparameters' writes)",
        name=getattr(error, "name", None),
    )
