"""Composition: small functions from schedules to schedules, each returning a plain :class:`Schedule`.

- :func:`join` plays schedules one after another, each from its own time zero (like optax's
  ``join_schedules``), jumping at the boundaries if the values differ;
- :func:`repeat` loops a schedule for a number of cycles, each cycle optionally longer (``period_mult``) and
  scaled (``decay``): warm restarts;
- :func:`shift`, :func:`stretch` and :func:`scale` move a schedule in time or scale its values.

All parts must share one unit (mixed-unit knots are for single schedules).

Example:
    >>> warm = Schedule([0, 100], [0.0, 1.0], unit="step")
    >>> decay = Schedule([0, 900], [1.0, 0.0], anneal="cos", unit="step")
    >>> s = join([warm, decay], [100])
    >>> b = s.bind()
    >>> b(50), b(100), b(1000)
    (0.5, 1.0, 0.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ..._validate import whole_number
from .anneal import step as _hold
from .schedule import Schedule


def _plain(schedule: Schedule, what: str) -> tuple[list[float], list[float]]:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{what} needs Schedules, got {schedule!r}")
    if schedule.pchip:
        raise ValueError(f"{what} cannot compose a 'pchip' schedule; compose piecewise schedules, then smooth")
    if any(k.unit != schedule.unit for k in schedule.knots):
        raise ValueError(f"{what} needs every knot in the schedule's unit; {schedule!r} mixes units")
    return [k.value for k in schedule.knots], list(schedule.knot_values)


def _common_unit(schedules: Sequence[Schedule], what: str) -> str:
    units = {s.unit for s in schedules}
    if len(units) != 1:
        raise ValueError(f"{what} needs schedules in one unit, got {sorted(units)}")
    return units.pop()


def join(schedules: Sequence[Schedule], boundaries: Sequence[float]) -> Schedule:
    """Schedule ``i`` runs from ``boundaries[i-1]`` (0 for the first), seeing time ``t - boundaries[i-1]``.

    Args:
        schedules: n schedules in one unit.
        boundaries: n - 1 strictly increasing times at which the next schedule takes over.

    Raises:
        TypeError: an item of ``schedules`` that is not a :class:`Schedule`.
        ValueError: not one boundary fewer than schedules, boundaries not positive and strictly increasing,
            a ``"pchip"`` schedule, or schedules in different units or with knots in mixed units.
    """
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join needs one boundary fewer than schedules: {len(schedules)} schedules, boundaries={list(boundaries)!r}"
        )
    if any(b1 <= b0 for b0, b1 in itertools.pairwise(boundaries)) or any(b <= 0 for b in boundaries[:1]):
        raise ValueError(f"join boundaries must be positive and strictly increasing, got {list(boundaries)!r}")
    unit = _common_unit(schedules, "join")
    starts = [0.0, *map(float, boundaries)]
    ends = [*map(float, boundaries), None]
    knots: list[float] = []
    values: list[float] = []
    anneals: list = []
    for schedule, start, end in zip(schedules, starts, ends):
        ks, vs = _plain(schedule, "join")
        # Keep the part of this schedule inside [start, end): clip its knots to the window.
        local = [(start + k, v) for k, v in zip(ks, vs)]
        seg_fns = list(schedule.anneals)
        if local[0][0] > start:  # before its first knot a schedule holds its first value
            local.insert(0, (start, local[0][1]))
            seg_fns.insert(0, _hold)
        if end is not None:
            local, seg_fns = _clip_end(schedule, local, seg_fns, end, start)
        if knots:  # a jump into this schedule: the previous segment ends where this one starts
            anneals.append(_hold)
        knots += [k for k, _ in local]
        values += [v for _, v in local]
        anneals += seg_fns
    return Schedule._with_jumps(knots, values, anneals, unit)


def _clip_end(
    schedule: Schedule,
    local: list[tuple[float, float]],
    seg_fns: list[Callable[..., Any]],
    end: float,
    start: float,
) -> tuple[list[tuple[float, float]], list[Callable[..., Any]]]:
    """Cut a schedule's (time, value) knots at ``end``, evaluating it there if a segment straddles ``end``."""
    kept = [(k, v) for k, v in local if k < end]
    fns = seg_fns[: len(kept) - 1]
    # All knots share one unit, so n_epochs=1 only matters for fractions, where it maps them onto themselves.
    value_at_end = schedule.bind(n_epochs=1)(end - start)
    if len(kept) < len(local) and kept:
        # The segment from the last kept knot continues to end with the same annealing, rescaled.
        last = len(kept) - 1
        k0, v0 = kept[last]
        k1, v1 = local[last + 1]
        fn = seg_fns[last]
        fns.append(_Partial(fn, v0, v1, (end - k0) / (k1 - k0)))
        kept.append((end, value_at_end))
    else:
        fns.append(_hold)
        kept.append((end, kept[-1][1]))
    return kept, fns


class _Partial:
    """The first fraction ``q`` of an annealing from ``a`` to ``b``, re-expressed on [0, 1]."""

    def __init__(self, fn: Callable[..., Any], a: float, b: float, q: float) -> None:
        self.fn, self.a, self.b, self.q = fn, a, b, q

    def __call__(self, a: float, b: float, p: Any) -> Any:
        return self.fn(self.a, self.b, p * self.q)

    def __repr__(self) -> str:
        return f"partial({self.fn!r}, {self.q:g})"


def repeat(schedule: Schedule, cycles: int, *, period_mult: float = 1.0, decay: float = 1.0) -> Schedule:
    """Play ``schedule`` ``cycles`` times back to back: warm restarts.

    Cycle ``i`` lasts ``period * period_mult**i`` (``period`` = the schedule's last knot) and its values are
    multiplied by ``decay**i``. After the last cycle the last value holds.

    Raises:
        TypeError: a ``schedule`` that is not a :class:`Schedule`.
        ValueError: ``cycles`` not a whole number >= 1, ``period_mult`` or ``decay`` not > 0, a schedule that
            does not start at 0 or has length 0, a ``"pchip"`` schedule, or knots in mixed units.

    Source: the warm restarts of I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", arXiv:1608.03983 (``period_mult`` is their ``T_mult``).
    """
    whole_number("repeat", "cycles", cycles)
    if not period_mult > 0:
        raise ValueError(f"repeat(period_mult={period_mult!r}) must be > 0")
    if not decay > 0:
        raise ValueError(f"repeat(decay={decay!r}) must be > 0")
    ks, vs = _plain(schedule, "repeat")
    if ks[0] != 0:
        raise ValueError(f"repeat needs a schedule starting at time 0, got knots {ks!r}")
    period = ks[-1]
    if not period > 0:
        raise ValueError(f"repeat needs a schedule longer than 0, got knots {ks!r}")
    knots: list[float] = []
    values: list[float] = []
    anneals: list = []
    start = 0.0
    for i in range(cycles):
        stretch_by = period_mult**i
        if knots:
            anneals.append(_hold)
        knots += [start + k * stretch_by for k in ks]
        values += [v * decay**i for v in vs]
        anneals += list(schedule.anneals)
        start += period * stretch_by
    return Schedule._with_jumps(knots, values, anneals, schedule.unit)


def shift(schedule: Schedule, dt: float) -> Schedule:
    """The same schedule ``dt`` later (in its unit); before its first knot it holds its first value."""
    ks, vs = _plain(schedule, "shift")
    return Schedule._with_jumps([k + dt for k in ks], vs, schedule.anneals, schedule.unit)


def stretch(schedule: Schedule, factor: float) -> Schedule:
    """The same schedule running ``factor`` times longer (``factor`` > 0).

    Raises:
        ValueError: a ``factor`` that is not > 0.
    """
    if not factor > 0:
        raise ValueError(f"stretch(factor={factor!r}) must be > 0")
    ks, vs = _plain(schedule, "stretch")
    return Schedule._with_jumps([k * factor for k in ks], vs, schedule.anneals, schedule.unit)


def scale(schedule: Schedule, factor: float) -> Schedule:
    """The same schedule with every value multiplied by ``factor``."""
    ks, vs = _plain(schedule, "scale")
    return Schedule._with_jumps(ks, [v * factor for v in vs], schedule.anneals, schedule.unit)
