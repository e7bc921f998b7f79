"""Domains: the values a hyperparameter's target can take, and the one check that a schedule stays inside them.

A :class:`Domain` is an interval of finite numbers; a :class:`Target` is one place a hyperparameter writes to,
with its ratio to the schedule's value and its domain. :func:`check_written` is the check, made on the values
actually written (after a param group's ratio, after an integer target's rounding): by the Scheduler when a fit
starts over the whole range a built-in schedule takes (:func:`range_points` gives the points that bound it), and
block by block, before any of the block's values is written, for a schedule of a custom kind.

Example:
    >>> import numpy as np
    >>> lr = Domain(0.0, why="torch.optim refuses a negative learning rate")
    >>> lr.outside(np.array([0.1, -0.5, 0.0, np.nan])).tolist()   # the refused values' indices
    [1, 3]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..schedules.anneal import ANNEALS
from ..schedules.bound import BoundSchedule

_KNOWN_ANNEALS = tuple(ANNEALS.values())


@dataclass(frozen=True)
class Domain:
    """The values a target can take: an interval of finite numbers, each end open or closed.

    Every domain refuses NaN and infinities. ``why`` says whose rule it is, for error messages.

    Example:
        >>> beta = Domain(0.0, 1.0, high_open=True, why="torch's Adam needs 0 <= betas[0] < 1")
        >>> str(beta), 0.9 in beta, 1.0 in beta
        ('[0, 1)', True, False)
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        return bool(self.outside(np.asarray([value], dtype=np.float64)).size == 0)

    def outside(self, values: np.ndarray) -> np.ndarray:
        """The indices of ``values`` (a float64 array) that this domain refuses."""
        ok = np.isfinite(values)
        if self.low > -math.inf:
            ok &= values > self.low if self.low_open else values >= self.low
        if self.high < math.inf:
            ok &= values < self.high if self.high_open else values <= self.high
        return np.flatnonzero(~ok)

    def __str__(self) -> str:
        low = "(-inf" if self.low == -math.inf else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "inf)" if self.high == math.inf else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{low}, {high}"


ANY = Domain()
NON_NEGATIVE = Domain(0.0)
UNIT = Domain(0.0, 1.0)


@dataclass(frozen=True)
class Target:
    """One place a hyperparameter writes to: where (for messages), the ratio to the schedule's value, and the
    domain of the value written there (``ratio * value``, after :meth:`HyperParameter.applied`)."""

    where: str
    ratio: float
    domain: Domain


def check_written(hp: Any, schedule: Any, values: np.ndarray, times: np.ndarray, axis: str) -> None:
    """Refuse scheduled ``values`` (float64, after ``hp.applied``) that would write outside a target's domain.

    Args:
        hp: the hyperparameter (its :meth:`targets` say where it writes, at which ratio, in which domain).
        schedule: the schedule, for the message.
        values: the values to check, shape ``(n,)``; ``times``: the schedule time of each, shape ``(n,)``.
        axis: ``"step"`` or ``"epoch"``, the unit of ``times``, for the message.

    Raises:
        ValueError: the first value some target refuses, quoting the value written, where, when and the domain.
    """
    for target in hp.targets():
        bad = target.domain.outside(values * target.ratio if target.ratio != 1.0 else values)
        if bad.size:
            k = bad[0]
            written = values[k] * target.ratio
            via = (
                ""
                if target.ratio == 1.0
                else f" (the schedule's {values[k]:g} times the group's ratio {target.ratio:g})"
            )
            raise ValueError(
                f"the schedule for {hp.name}, {schedule!r}, would write {written:g} to {target.where}{via} at {axis} "
                f"{times[k]:g} of the schedule, outside its domain {target.domain}"
                + (f" ({target.domain.why})" if target.domain.why else "")
                + "; change the schedule's values so that they stay inside it"
            )


def range_points(bound: Any, t0: float, t1: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, values), float64 arrays, whose values bound every value a built-in schedule takes on [t0, t1]
    (``t1=None``: on [t0, ever)): the ends and every knot inside. Exact because each built-in annealing is
    monotone between its knots' values and PCHIP does not overshoot. None for a custom annealing or schedule
    type, which is checked block by block instead."""
    if not isinstance(bound, BoundSchedule) or not all(a in _KNOWN_ANNEALS for a in bound.anneals):
        return None
    points = [(t0, bound(t0))]
    points += [(k, v) for k, v in zip(bound.knots, bound.values) if k > t0 and (t1 is None or k < t1)]
    if t1 is None:
        points.append((max(bound.knots[-1], t0), bound.values[-1]))
    else:
        points.append((t1, bound(t1)))
    return np.array([t for t, _ in points], dtype=np.float64), np.array([v for _, v in points], dtype=np.float64)
