"""Composition: small functions from schedules to schedules, each returning a plain :class:`Schedule`.

- :func:`join` plays schedules one after another, each from its own time zero (like optax's
  ``join_schedules``), jumping at the boundaries if the values differ;
- :func:`repeat` loops a schedule for a number of cycles, each cycle optionally longer (``period_mult``) and
  scaled (``decay``): warm restarts;
- :func:`shift`, :func:`stretch` and :func:`scale` move a schedule in time or scale its values.

All parts must share one unit (mixed-unit knots are for single schedules). Any schedule object composes
(:mod:`~loopkit.schedules.protocol`): torch's endless decays (:func:`~.torch_lr.step_lr`,
:func:`~.torch_lr.exponential_lr`), products and a user's own; when every part is a plain :class:`Schedule` the
result is one too (knots you can read), otherwise a small object that evaluates its parts at moved times.

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

from . import _args, protocol
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


def join(schedules: Sequence[Any], boundaries: Sequence[float]) -> Any:
    """Schedule ``i`` runs from ``boundaries[i-1]`` (0 for the first), seeing time ``t - boundaries[i-1]``.

    Args:
        schedules: n schedules in one unit: plain :class:`Schedule` objects (the result is one too) or any
            schedule objects (:mod:`~loopkit.schedules.protocol`), such as ``step_lr``, where the
            result evaluates them at ``t - boundaries[i-1]``.
        boundaries: n - 1 strictly increasing times at which the next schedule takes over, in the parts' unit.

    Raises:
        TypeError: an item of ``schedules`` that is not a schedule.
        ValueError: not one boundary fewer than schedules, boundaries not finite, positive and strictly
            increasing, a ``"pchip"`` Schedule among plain ones, or schedules in different units (for objects
            that are not plain Schedules, when the result is bound), or in fractions of the fit beside an
            endless one.

    Example:
        >>> from loopkit.schedules import exponential_lr, linear_lr
        >>> s = join([linear_lr(0.1, 0.5, total_iters=4), exponential_lr(0.1, gamma=0.5)], [4])
        >>> [round(v, 6) for v in s.values(7).tolist()]
        [0.05, 0.0625, 0.075, 0.0875, 0.1, 0.05, 0.025]
    """
    if isinstance(schedules, Schedule):
        raise TypeError(f"join needs a sequence of Schedules, got one Schedule {schedules!r}; wrap it in a list")
    listed = _listed(schedules, "schedules")
    if listed and not all(isinstance(s, Schedule) for s in listed):
        parts = [protocol.checked(s, "join") for s in listed]
        return protocol.Joined(parts, _boundaries(boundaries, len(parts)))
    schedules = _schedules(schedules, "join")
    boundaries = _boundaries(boundaries, len(schedules))
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
        elif local[0][0] < start:  # a schedule shifted to begin before its window: cut what comes before
            local, seg_fns = _clip_start(local, seg_fns, start)
        if end is not None:
            local, seg_fns = _clip_end(schedule, local, seg_fns, end, start)
        if knots:  # a jump into this schedule: the previous segment ends where this one starts
            anneals.append(_hold)
        knots += [k for k, _ in local]
        values += [v for _, v in local]
        anneals += seg_fns
    return Schedule._with_jumps(knots, values, anneals, unit, owner="join", open_from=open_from)


def _boundaries(boundaries: Any, n_schedules: int) -> list[float]:
    out = [_args.real("join", f"boundaries[{i}]", b) for i, b in enumerate(_listed(boundaries, "boundaries"))]
    if len(out) != n_schedules - 1:
        raise ValueError(
            f"join needs one boundary fewer than schedules: {n_schedules} schedules, boundaries={list(boundaries)!r}"
        )
    if any(b1 <= b0 for b0, b1 in itertools.pairwise(out)) or any(b <= 0 for b in out[:1]):
        raise ValueError(f"join boundaries must be positive and strictly increasing, got {list(boundaries)!r}")
    return out


def _clip_start(
    local: list[tuple[float, float]], seg_fns: list[Callable[..., Any]], start: float
) -> tuple[list[tuple[float, float]], list[Callable[..., Any]]]:
    """Cut a schedule's (time, value) knots at ``start``, evaluating it there if a segment straddles ``start``."""
    after = next((i for i, (k, _) in enumerate(local) if k > start), len(local))
    if after == len(local):  # every knot is before the window: the last value holds
        return [(start, local[-1][1])], []
    if local[after - 1][0] == start:  # a knot (the last of a jump) at the window's start
        return local[after - 1 :], seg_fns[after - 1 :]
    (k0, v0), (k1, v1) = local[after - 1], local[after]
    fn = seg_fns[after - 1]
    q = (start - k0) / (k1 - k0)
    return [(start, float(fn(v0, v1, q))), *local[after:]], [_Partial(fn, v0, v1, 1.0, q), *seg_fns[after:]]


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
    """The part from ``q0`` to ``q0 + q`` of an annealing from ``a`` to ``b``, re-expressed on [0, 1]."""

    def __init__(self, fn: Callable[..., Any], a: float, b: float, q: float, q0: float = 0.0) -> None:
        self.fn, self.a, self.b, self.q, self.q0 = fn, a, b, q - q0 if q0 else q, q0

    def __call__(self, a: float, b: float, p: Any) -> Any:
        return self.fn(self.a, self.b, self.q0 + p * self.q if self.q0 else p * self.q)

    def __repr__(self) -> str:
        where = f"{self.q:g}" if not self.q0 else f"{self.q0:g} to {self.q0 + self.q:g}"
        return f"partial({self.fn!r}, {where})"


def repeat(
    schedule: Any, cycles: int, *, period_mult: float = 1.0, decay: float = 1.0, period: float | None = None
) -> Any:
    """Play ``schedule`` ``cycles`` times back to back: warm restarts.

    Cycle ``i`` lasts ``period * period_mult**i`` and its values are multiplied by ``decay**i``. After the last
    cycle the last value holds.

    Args:
        schedule: a piecewise :class:`Schedule` starting at time 0, all knots in its unit (a cycle is the whole
            schedule, up to its last knot), or any schedule object with ``period`` given (a cycle is its first
            ``period``, seen ``period_mult**i`` times slower in cycle ``i``), such as ``step_lr``.
        cycles: a whole number >= 1; at most :data:`~loopkit.schedules._args.MAX_KNOTS` knots in all.
        period_mult: a finite number > 0.
        decay: a finite number > 0.
        period: the length of one cycle, a finite number > 0, in the schedule's unit; needed for a schedule
            that is not a plain :class:`Schedule` (``step_lr`` never ends); for a plain one it cuts each cycle
            at ``period`` instead of at the last knot (the result is then not a plain Schedule).

    Raises:
        TypeError: a ``schedule`` that is not a schedule, an argument that is not a real number.
        ValueError: ``cycles`` not a whole number in range, ``period_mult`` or ``decay`` not finite and > 0, a
            schedule that does not start at 0 or has length 0, a ``"pchip"`` schedule, knots in mixed units,
            cycles whose times or values leave the float range, or ``period`` missing where it is needed.

    Example:
        >>> from loopkit.schedules import step_lr
        >>> s = repeat(step_lr(1.0, step_size=2, gamma=0.5), 2, period=4, decay=0.1)
        >>> [round(v, 6) for v in s.values(9).tolist()]
        [1.0, 1.0, 0.5, 0.5, 0.1, 0.1, 0.05, 0.05, 0.025]

    Source: the warm restarts of I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", arXiv:1608.03983 (``period_mult`` is their ``T_mult``).
    """
    if period is not None or not isinstance(schedule, Schedule):
        protocol.checked(schedule, "repeat")
        if period is None:
            raise ValueError(
                f"repeat({schedule!r}, ...): a schedule that is not a plain Schedule has no last knot to end a "
                "cycle; pass period=, the length of one cycle in its unit"
            )
        period = _args.real("repeat", "period", period, low=0, low_open=True)
        cycles = _args.count("repeat", "cycles", cycles, 1, _args.MAX_KNOTS)
        period_mult = _args.real("repeat", "period_mult", period_mult, low=0, low_open=True)
        decay = _args.real("repeat", "decay", decay, low=0, low_open=True)
        return protocol.Repeated(schedule, cycles, period, period_mult, decay)
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


def shift(schedule: Any, dt: float) -> Any:
    """The same schedule ``dt`` later (in its unit; ``dt`` finite, any sign); before its first knot it holds
    its first value (optax's ``transition_begin``). Any schedule object shifts: ``step_lr`` shifted by ``dt``
    holds ``base_lr`` until ``dt``."""
    dt = _args.real("shift", "dt", dt)
    if not isinstance(schedule, Schedule):
        return protocol.Mapped(protocol.checked(schedule, "shift"), "shift", dt)
    ks, vs = _plain(schedule, "shift")
    open_from = None if schedule._open_from is None else schedule._open_from + dt
    return Schedule._with_jumps(
        [k + dt for k in ks], vs, schedule.anneals, schedule.unit, owner="shift", open_from=open_from
    )


def stretch(schedule: Any, factor: float) -> Any:
    """The same schedule running ``factor`` times longer.

    Raises:
        ValueError: a ``factor`` that is not finite and > 0, or knots that leave the float range.
    """
    factor = _args.real("stretch", "factor", factor, low=0, low_open=True)
    if not isinstance(schedule, Schedule):
        return protocol.Mapped(protocol.checked(schedule, "stretch"), "stretch", factor)
    ks, vs = _plain(schedule, "stretch")
    open_from = None if schedule._open_from is None else schedule._open_from * factor
    return Schedule._with_jumps(
        [k * factor for k in ks], vs, schedule.anneals, schedule.unit, owner="stretch", open_from=open_from
    )


def scale(schedule: Any, factor: float) -> Any:
    """The same schedule with every value multiplied by ``factor`` (finite, any sign; 0 only without ``exp``
    segments, which cannot reach zero)."""
    factor = _args.real("scale", "factor", factor)
    if not isinstance(schedule, Schedule):
        return protocol.Mapped(protocol.checked(schedule, "scale"), "scale", factor)
    ks, vs = _plain(schedule, "scale")
    return Schedule._with_jumps(
        ks,
        [v * factor for v in vs],
        schedule.anneals,
        schedule.unit,
        owner=f"scale(factor={factor!r})",
        open_from=schedule._open_from,
    )
