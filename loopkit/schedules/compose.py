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
import math
from collections.abc import Callable, Sequence
from typing import Any

from . import _args
from .anneal import step as _hold
from .schedule import Schedule, _listed


def _plain(schedule: Schedule, what: str) -> tuple[list[float], list[float]]:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"{what} needs Schedules, got {schedule!r}")
    if schedule.pchip:
        raise ValueError(f"{what} cannot compose a 'pchip' schedule; compose piecewise schedules, then smooth")
    if any(k.unit != schedule.unit for k in schedule.knots):
        raise ValueError(f"{what} needs every knot in the schedule's unit; {schedule!r} mixes units")
    return [k.value for k in schedule.knots], list(schedule.knot_values)


def _schedules(schedules: Any, what: str) -> list[Schedule]:
    if isinstance(schedules, Schedule):
        raise TypeError(f"{what} needs a sequence of Schedules, got one Schedule {schedules!r}; wrap it in a list")
    parts = _listed(schedules, "schedules")
    if not parts:
        raise ValueError(f"{what} needs at least one schedule, got {parts!r}")
    for part in parts:
        _plain(part, what)
    return parts


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
        ValueError: not one boundary fewer than schedules, boundaries not finite, positive and strictly
            increasing, a ``"pchip"`` schedule, or schedules in different units or with knots in mixed units.
    """
    schedules = _schedules(schedules, "join")
    boundaries = [_args.real("join", f"boundaries[{i}]", b) for i, b in enumerate(_listed(boundaries, "boundaries"))]
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
    open_from = None
    for schedule, start, end in zip(schedules, starts, ends):
        ks, vs = _plain(schedule, "join")
        if end is None and schedule._open_from is not None:
            open_from = start + schedule._open_from
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
    return Schedule._with_jumps(knots, values, anneals, unit, owner="join", open_from=open_from)


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

    Args:
        schedule: a piecewise :class:`Schedule` starting at time 0, all knots in its unit.
        cycles: a whole number >= 1; at most :data:`~loopkit.schedules._args.MAX_KNOTS` knots in all.
        period_mult: a finite number > 0.
        decay: a finite number > 0.

    Raises:
        TypeError: a ``schedule`` that is not a :class:`Schedule`, an argument that is not a real number.
        ValueError: ``cycles`` not a whole number in range, ``period_mult`` or ``decay`` not finite and > 0, a
            schedule that does not start at 0 or has length 0, a ``"pchip"`` schedule, knots in mixed units, or
            cycles whose times or values leave the float range.

    Source: the warm restarts of I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", arXiv:1608.03983 (``period_mult`` is their ``T_mult``).
    """
    ks, vs = _plain(schedule, "repeat")
    cycles = _args.count(
        "repeat",
        "cycles",
        cycles,
        1,
        _args.MAX_KNOTS // len(ks),
        hint=f"{len(ks)} knots per cycle, {_args.MAX_KNOTS:,} in all",
    )
    period_mult = _args.real("repeat", "period_mult", period_mult, low=0, low_open=True)
    decay = _args.real("repeat", "decay", decay, low=0, low_open=True)
    if ks[0] != 0:
        raise ValueError(f"repeat needs a schedule starting at time 0, got knots {ks!r}")
    period = ks[-1]
    if not period > 0:
        raise ValueError(f"repeat needs a schedule longer than 0, got knots {ks!r}")
    knots, values, anneals = _cycles(ks, vs, list(schedule.anneals), cycles, period_mult, decay, "repeat")
    return Schedule._with_jumps(knots, values, anneals, schedule.unit, owner="repeat")


def _cycles(
    ks: list[float], vs: list[float], fns: list, cycles: int, period_mult: float, decay: float, owner: str
) -> tuple[list[float], list[float], list]:
    """The knots, values and annealings of ``cycles`` back-to-back copies, refusing any that overflow."""
    period = ks[-1]
    try:
        last_stretch = period_mult ** (cycles - 1)
        last_scale = decay ** (cycles - 1)
        total = period * (cycles if period_mult == 1.0 else (period_mult**cycles - 1) / (period_mult - 1))
    except OverflowError:
        last_stretch = last_scale = total = float("inf")
    if not (math.isfinite(total) and math.isfinite(last_stretch) and math.isfinite(last_scale * max(map(abs, vs)))):
        raise ValueError(
            f"{owner}(cycles={cycles}, period_mult={period_mult!r}, decay={decay!r}): the last cycle's times or "
            "values leave the float range; use fewer cycles or factors closer to 1"
        )
    knots: list[float] = []
    values: list[float] = []
    anneals: list = []
    start = 0.0
    for i in range(cycles):
        stretch_by = period_mult**i
        scale_by = decay**i
        if knots:
            anneals.append(_hold)
        knots += [start + k * stretch_by for k in ks]
        values += [v * scale_by for v in vs]
        anneals += fns
        start += period * stretch_by
    return knots, values, anneals


def shift(schedule: Schedule, dt: float) -> Schedule:
    """The same schedule ``dt`` later (in its unit; ``dt`` finite, any sign); before its first knot it holds
    its first value."""
    dt = _args.real("shift", "dt", dt)
    ks, vs = _plain(schedule, "shift")
    open_from = None if schedule._open_from is None else schedule._open_from + dt
    return Schedule._with_jumps(
        [k + dt for k in ks], vs, schedule.anneals, schedule.unit, owner="shift", open_from=open_from
    )


def stretch(schedule: Schedule, factor: float) -> Schedule:
    """The same schedule running ``factor`` times longer.

    Raises:
        ValueError: a ``factor`` that is not finite and > 0, or knots that leave the float range.
    """
    factor = _args.real("stretch", "factor", factor, low=0, low_open=True)
    ks, vs = _plain(schedule, "stretch")
    open_from = None if schedule._open_from is None else schedule._open_from * factor
    return Schedule._with_jumps(
        [k * factor for k in ks], vs, schedule.anneals, schedule.unit, owner="stretch", open_from=open_from
    )


def scale(schedule: Schedule, factor: float) -> Schedule:
    """The same schedule with every value multiplied by ``factor`` (finite, any sign; 0 only without ``exp``
    segments, which cannot reach zero)."""
    factor = _args.real("scale", "factor", factor)
    ks, vs = _plain(schedule, "scale")
    return Schedule._with_jumps(
        ks,
        [v * factor for v in vs],
        schedule.anneals,
        schedule.unit,
        owner=f"scale(factor={factor!r})",
        open_from=schedule._open_from,
    )
