"""A schedule laid out on one axis (steps or epochs), the form the Scheduler evaluates, and the knot checks every
schedule passes through (:func:`check_knots`)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _args, anneal as _anneal


def check_knots(
    owner: str | Callable[[], str], knots: Sequence[float], values: Sequence[float], anneals: Sequence[Callable]
) -> None:
    """Raise ``ValueError`` unless the knots (one axis, non-decreasing) and values can be evaluated to finite
    numbers everywhere: finite knots and values, finite gaps between knots, and each annealing defined
    between its segment's two values (:func:`loopkit.schedules.anneal.check`). ``owner`` names the
    caller in the message (a function to build that name only when needed)."""

    def name() -> str:
        return owner() if callable(owner) else owner

    k = np.asarray(knots, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if not (np.isfinite(k).all() and np.isfinite(v).all()):
            raise ValueError(f"{name()} gives knots or values beyond the float range; use smaller numbers")
        gaps = np.diff(k)
        if not np.isfinite(gaps).all():
            i = int(np.argmin(np.isfinite(gaps)))
            raise ValueError(
                f"{name()} has knots {knots[i]!r} and {knots[i + 1]!r} whose distance overflows; use smaller times"
            )
        steps_ok = np.isfinite(np.diff(v) * 2) if len(v) > 1 else np.ones(0, dtype=bool)
    exp = _anneal.exp
    for i, fn in enumerate(anneals):
        if fn is exp or not steps_ok[i]:
            try:
                _anneal.check(fn, values[i], values[i + 1])
            except ValueError as err:
                raise ValueError(f"{name()}: {err}") from None


class BoundSchedule:
    """A schedule laid out on one axis: ``bound(t)`` for one time, ``bound.table(ts)`` for many.

    Attributes:
        axis: ``"step"`` or ``"epoch"``.
        knots, values: the knots on that axis and the values at them.
        horizon: the last knot; after it the last value holds.
        open_from: the fit may end the schedule anywhere from this time on, cutting it short (the start of
            :func:`~loopkit.schedules.presets.cosine_restarts`' last cycle; torch's schedulers
            never end either). Equal to ``horizon`` for a schedule that must be played to its end.

    Times are finite real numbers; NaN, infinities and non-numbers raise (``ValueError``/``TypeError``).
    """

    def __init__(
        self,
        axis: str,
        knots: Sequence[float],
        values: Sequence[float],
        anneals: Sequence[Callable],
        pchip: bool = False,
        open_from: float | None = None,
        owner: str | Callable[[], str] = "BoundSchedule",
    ) -> None:
        if axis not in ("step", "epoch"):
            raise ValueError(f"BoundSchedule(axis={axis!r}): use 'step' or 'epoch'")
        self.axis = axis
        self.knots = [_args.real("BoundSchedule", "knots[i]", k) for k in knots]
        self.values = [_args.real("BoundSchedule", "values[i]", v) for v in values]
        self.anneals = list(anneals)
        if not self.knots or len(self.knots) != len(self.values):
            raise ValueError(
                f"BoundSchedule needs one value per knot, at least one; got {self.knots!r}, {self.values!r}"
            )
        if (not pchip and len(self.anneals) != len(self.knots) - 1) or any(not callable(a) for a in self.anneals):
            raise ValueError(f"BoundSchedule needs one annealing function per segment, got {self.anneals!r}")
        if any(k1 < k0 for k0, k1 in itertools.pairwise(self.knots)):
            raise ValueError(f"BoundSchedule knots must not decrease, got {self.knots!r}")
        if open_from is not None:
            open_from = _args.real("BoundSchedule", "open_from", open_from)
        check_knots(owner, self.knots, self.values, self.anneals)
        self.horizon = self.knots[-1]
        self.open_from = self.horizon if open_from is None else min(open_from, self.horizon)
        #: the largest magnitude the built-in annealings reach (they stay between their knots' values)
        self.max_abs = max(abs(v) for v in self.values)
        # At a repeated first knot (a jump at the start) the value is the later one, as at every jump.
        self._first = self.values[bisect.bisect_right(self.knots, self.knots[0]) - 1]
        self._pchip = None
        if pchip:
            from scipy.interpolate import PchipInterpolator  # lazily: scipy is heavy and rarely needed

            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    self._pchip = PchipInterpolator(np.asarray(self.knots), np.asarray(self.values), extrapolate=False)
                    # scipy evaluates sum_k c[k] (t - knot)**(3 - k): every term must stay finite, t - knot <= gap
                    gaps = np.diff(np.asarray(self.knots, dtype=np.float64))
                    powers = gaps[np.newaxis, :] ** np.array([3.0, 2.0, 1.0, 0.0])[:, np.newaxis]
                    terms = np.abs(self._pchip.c) * powers
                    finite = bool(np.isfinite(powers).all() and np.isfinite(terms.sum(axis=0)).all())
            except ValueError:  # scipy's own check of the slopes
                finite = False
            if not finite:
                raise ValueError(
                    f"a smooth curve through knots {self.knots} and values {self.values} overflows the float "
                    "range (the points are too steep, or too far apart); use closer, less steep points"
                )
        # Segments sharing one annealing function are evaluated together in table(): one numpy call each.
        groups: dict[int, int] = {}
        self._fns: list[Callable] = []
        for fn in self.anneals:
            if id(fn) not in groups:
                groups[id(fn)] = len(self._fns)
                self._fns.append(fn)
        self._fn_of_segment = np.array([groups[id(fn)] for fn in self.anneals], dtype=np.int64)

    def __call__(self, t: float) -> float:
        t = _args.time(t)
        knots = self.knots
        if t <= knots[0]:
            return self.values[0] if t < knots[0] else self._first
        if t >= knots[-1]:
            return self.values[-1]
        if self._pchip is not None:
            return float(self._pchip(t))
        i = bisect.bisect_right(knots, t) - 1
        k0 = knots[i]
        return float(self.anneals[i](self.values[i], self.values[i + 1], (t - k0) / (knots[i + 1] - k0)))

    def table(self, ts: Any) -> np.ndarray:
        """Values at many times at once (real array in, float64 array out, same shape)."""
        ts = _args.times(ts)
        knots = np.asarray(self.knots)
        out = np.empty_like(ts)
        before, after = ts <= knots[0], ts >= knots[-1]
        out[before] = self.values[0]
        out[ts == knots[0]] = self._first
        out[after] = self.values[-1]
        inside = ~(before | after)
        if not inside.any():
            return out
        if self._pchip is not None:
            out[inside] = self._pchip(ts[inside])
            return out
        t_in = ts[inside]
        segment = np.searchsorted(knots, t_in, side="right") - 1
        values = np.asarray(self.values)
        k0, k1 = knots[segment], knots[segment + 1]
        p = (t_in - k0) / (k1 - k0)
        a, b = values[segment], values[segment + 1]
        result = np.empty_like(t_in)
        if len(self._fns) == 1:
            result[:] = self._fns[0](a, b, p)
        else:
            group = self._fn_of_segment[segment]
            for g, fn in enumerate(self._fns):
                mask = group == g
                if mask.any():
                    result[mask] = fn(a[mask], b[mask], p[mask])
        out[inside] = result
        return out

    def __repr__(self) -> str:
        return f"BoundSchedule(axis={self.axis!r}, knots={self.knots!r}, values={self.values!r})"
