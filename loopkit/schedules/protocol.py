"""What a schedule object is, and composition of any such object (endless ones included).

A **schedule** is any object with a ``bind`` method; the Scheduler, :func:`~.schedule.curve`, :func:`product`
and the composition functions ask nothing else of it::

    schedule.bind(*, steps_per_epoch=None, n_epochs=None) -> bound

``steps_per_epoch`` (a whole number >= 1, or None when the data has no length) and ``n_epochs`` (a number > 0,
fractional for a fit bounded by ``max_steps``, or None) describe the fit; a schedule that does not need them
ignores them. The **bound** schedule has:

=============  ======================================================================================
``axis``       ``"step"`` (time counts optimizer steps from 0) or ``"epoch"`` (``epoch + batch / n``)
``horizon``    the time its last change happens, a float; ``math.inf`` for a schedule with no end
``bound(t)``   its value at time ``t``, a Python float; ``t`` is any finite float, negative included
``table(ts)``  its values at a float64 array of times, an array of the same shape (``bound(t)`` elementwise)
``open_from``  optional: the fit may end it anywhere from this time on (default ``horizon``: play it out);
               a schedule with no end sets it (``0.0``: any fit may cut it), or every finite fit refuses it
``max_abs``    optional: a bound on ``abs(value)`` at every time, for :func:`product`'s overflow check
=============  ======================================================================================

The value must be a pure function of ``t`` (no state between calls): the Scheduler lays a whole epoch out with
``table`` ahead of time and evaluates single times again on resume, and both must agree.

:class:`~.schedule.Schedule`, :func:`~.torch_lr.step_lr`, :func:`~.torch_lr.exponential_lr`,
:func:`~.torch_lr.product` and :func:`~.endless.inverse_sqrt` all follow it. :func:`~.compose.join`,
:func:`~.compose.shift`, :func:`~.compose.repeat`, :func:`~.compose.stretch` and :func:`~.compose.scale` return a
plain :class:`~.schedule.Schedule` when every part is one, and otherwise one of the small objects below, which
evaluate their parts at shifted, stretched or scaled times.

Example:
    >>> from loopkit.schedules import join, linear_lr, step_lr
    >>> warm_then_step = join([linear_lr(1.0, 0.1, total_iters=5), step_lr(1.0, step_size=3, gamma=0.5)], [5])
    >>> [round(v, 6) for v in warm_then_step.values(12).tolist()]
    [0.1, 0.28, 0.46, 0.64, 0.82, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _args
from .schedule import curve


def is_schedule(obj: Any) -> bool:
    """Whether ``obj`` follows the protocol's one requirement: a ``bind`` method."""
    return callable(getattr(obj, "bind", None))


def checked(obj: Any, what: str) -> Any:
    """``obj`` if it is a schedule, else ``TypeError`` naming ``what`` and quoting the value."""
    if not is_schedule(obj):
        raise TypeError(f"{what} needs schedules (objects with a bind method), got {_args.show(obj)}")
    if getattr(obj, "unit", None) == "fraction":
        raise ValueError(
            f"{what}: {obj!r} is timed in fractions of the fit, which have no meaning inside a composition with a "
            "schedule that never ends; give its knots in steps or epochs"
        )
    return obj


class _Composite:
    """What every composite shares: plain-data equality and the per-step curve."""

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
        """The per-step curve of a run of ``n_steps`` steps, as :meth:`Schedule.values`."""
        return curve(self, n_steps, steps_per_epoch, n_epochs)


def _bind_all(parts: Sequence[Any], what: str, steps_per_epoch: Any, n_epochs: Any) -> list[Any]:
    bounds = [p.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs) for p in parts]
    axes = sorted({b.axis for b in bounds})
    if len(axes) != 1:
        raise ValueError(f"{what} has parts on the {axes} axes; give every part the same unit")
    return bounds


class Joined(_Composite):
    """Part ``i`` from ``boundaries[i-1]`` on (0 for the first), seeing time ``t - boundaries[i-1]``; made by
    :func:`~.compose.join` when a part is not a plain :class:`~.schedule.Schedule`."""

    def __init__(self, parts: Sequence[Any], boundaries: Sequence[float]) -> None:
        self.parts, self.boundaries = tuple(parts), tuple(boundaries)

    def _key(self) -> tuple:
        return (self.parts, self.boundaries)

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundJoined:
        return _BoundJoined(self, _bind_all(self.parts, repr(self), steps_per_epoch, n_epochs))

    def __repr__(self) -> str:
        return f"join([{', '.join(map(repr, self.parts))}], {list(self.boundaries)!r})"


class _BoundJoined:
    def __init__(self, schedule: Joined, bounds: list[Any]) -> None:
        self.schedule, self.bounds = schedule, bounds
        self.axis = bounds[0].axis
        self.starts = [0.0, *schedule.boundaries]
        last = bounds[-1]
        self.horizon = self.starts[-1] + last.horizon
        self.open_from = self.starts[-1] + getattr(last, "open_from", last.horizon)
        self.max_abs = max(getattr(b, "max_abs", math.inf) for b in bounds)

    def __call__(self, t: float) -> float:
        t = _args.time(t)
        i = bisect.bisect_right(self.schedule.boundaries, t)
        return float(self.bounds[i](t - self.starts[i]))

    def table(self, ts: Any) -> np.ndarray:
        ts = _args.times(ts)
        part = np.searchsorted(np.asarray(self.schedule.boundaries, dtype=np.float64), ts, side="right")
        out = np.empty_like(ts)
        for i, (bound, start) in enumerate(zip(self.bounds, self.starts)):
            mask = part == i
            if mask.any():
                out[mask] = bound.table(ts[mask] - start)
        return out


class Mapped(_Composite):
    """``schedule`` moved on one axis: ``shift`` (its value at ``t - arg``), ``stretch`` (at ``t / arg``) or
    ``scale`` (its values times ``arg``); made by :func:`~.compose.shift`, :func:`~.compose.stretch` and
    :func:`~.compose.scale` for schedules that are not a plain :class:`~.schedule.Schedule`."""

    def __init__(self, schedule: Any, call: str, arg: float) -> None:
        self.schedule, self.call, self.arg = schedule, call, arg

    def _key(self) -> tuple:
        return (self.schedule, self.call, self.arg)

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundMapped:
        inner = self.schedule.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs)
        if self.call == "shift":
            return _BoundMapped(inner, offset=self.arg, factor=1.0, scale=1.0)
        if self.call == "stretch":
            return _BoundMapped(inner, offset=0.0, factor=self.arg, scale=1.0)
        if not math.isfinite(getattr(inner, "max_abs", 0.0) * self.arg):
            raise ValueError(f"{self!r} can reach values beyond the float range; use a smaller factor")
        return _BoundMapped(inner, offset=0.0, factor=1.0, scale=self.arg)

    def __repr__(self) -> str:
        return f"{self.call}({self.schedule!r}, {self.arg!r})"


class _BoundMapped:
    """``scale * inner((t - offset) / factor)``."""

    def __init__(self, inner: Any, *, offset: float, factor: float, scale: float) -> None:
        self.inner, self.offset, self.factor, self.scale = inner, offset, factor, scale
        self.axis = inner.axis
        self.horizon = offset + inner.horizon * factor
        self.open_from = offset + getattr(inner, "open_from", inner.horizon) * factor
        self.max_abs = getattr(inner, "max_abs", math.inf) * abs(scale)

    def __call__(self, t: float) -> float:
        t = _args.time(t)
        return self.scale * float(self.inner((t - self.offset) / self.factor))

    def table(self, ts: Any) -> np.ndarray:
        ts = _args.times(ts)
        return self.scale * np.asarray(self.inner.table((ts - self.offset) / self.factor), dtype=np.float64)


class Repeated(_Composite):
    """``cycles`` cycles of ``schedule``'s first ``period``: cycle ``i`` lasts ``period * period_mult**i``, sees
    its own time divided by ``period_mult**i`` and is scaled by ``decay**i``; after the last cycle its end value
    holds. Made by :func:`~.compose.repeat` when ``schedule`` is not a plain :class:`~.schedule.Schedule`."""

    def __init__(self, schedule: Any, cycles: int, period: float, period_mult: float, decay: float) -> None:
        self.schedule, self.cycles, self.period = schedule, cycles, period
        self.period_mult, self.decay = period_mult, decay
        self.starts = [0.0]
        try:  # float ** int raises OverflowError past the float range instead of giving inf
            for i in range(cycles):
                self.starts.append(self.starts[-1] + period * period_mult**i)
            in_range = math.isfinite(self.starts[-1]) and math.isfinite(decay ** (cycles - 1))
        except OverflowError:
            in_range = False
        if not in_range:
            raise ValueError(
                f"repeat(cycles={cycles}, period={period!r}, period_mult={period_mult!r}, decay={decay!r}): the "
                "last cycle's times or values leave the float range; use fewer cycles or factors closer to 1"
            )

    def _key(self) -> tuple:
        return (self.schedule, self.cycles, self.period, self.period_mult, self.decay)

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundRepeated:
        return _BoundRepeated(self, self.schedule.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs))

    def __repr__(self) -> str:
        return (
            f"repeat({self.schedule!r}, {self.cycles}, period={self.period!r}, period_mult={self.period_mult!r}, "
            f"decay={self.decay!r})"
        )


class _BoundRepeated:
    def __init__(self, schedule: Repeated, inner: Any) -> None:
        self.schedule, self.inner = schedule, inner
        self.axis = inner.axis
        self.horizon = self.open_from = schedule.starts[-1]
        last_scale = schedule.decay ** (schedule.cycles - 1)
        self.max_abs = getattr(inner, "max_abs", math.inf) * max(1.0, last_scale)
        if not math.isfinite(self.max_abs) and math.isfinite(getattr(inner, "max_abs", math.inf)):
            raise ValueError(f"{schedule!r} can reach values beyond the float range; use fewer cycles")
        # after the last cycle: the last cycle's value at its end
        self._end = last_scale * float(inner(schedule.period))

    def _local(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For times within the cycles: the cycle index, the time within it (inner units) and the scale."""
        s = self.schedule
        i = np.clip(np.searchsorted(np.asarray(s.starts[1:-1]), t, side="right"), 0, s.cycles - 1)
        starts = np.asarray(s.starts)[i]
        return i, (t - starts) / s.period_mult ** i.astype(np.float64), s.decay ** i.astype(np.float64)

    def __call__(self, t: float) -> float:
        t = _args.time(t)
        s = self.schedule
        if t >= s.starts[-1]:
            return self._end
        i = min(max(bisect.bisect_right(s.starts, t) - 1, 0), s.cycles - 1)
        return s.decay**i * float(self.inner((t - s.starts[i]) / s.period_mult**i))

    def table(self, ts: Any) -> np.ndarray:
        ts = _args.times(ts)
        out = np.full_like(ts, self._end)
        inside = ts < self.schedule.starts[-1]
        if inside.any():
            _, local, scale = self._local(ts[inside])
            out[inside] = scale * np.asarray(self.inner.table(local), dtype=np.float64)
        return out
