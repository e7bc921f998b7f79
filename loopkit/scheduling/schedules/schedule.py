"""Piecewise schedules: knots, values, and an annealing function per segment; pure functions of time.

Time model. A run has two clocks: ``step`` (optimizer steps since the fit began, from 0) and the epoch position
``epoch + batch / steps_per_epoch`` (:func:`epoch_position`). Knots are given in a unit, ``"epoch"`` (the
default), ``"step"`` or ``"fraction"`` (of the whole fit); a single knot can carry its own unit with
:func:`steps`, :func:`epochs` or :func:`fraction`, so ``Schedule([0, steps(500), 10], [0, 1e-3, 0])`` warms up
for 500 steps and then anneals to epoch 10.

Binding resolves every knot onto one axis once the run's geometry is known: the step axis if all knots are in
steps, otherwise the epoch axis. Before the first knot the value is the first value; after the last knot it
holds the last value.

Example:
    >>> s = Schedule([0, 2, 10], [0.0, 1.0, 0.1], anneal=["linear", "cos"])
    >>> b = s.bind(steps_per_epoch=100, n_epochs=10)
    >>> b.axis, b(1.0), b(2.0), b(10.0), b(99.0)
    ('epoch', 0.5, 1.0, 0.1, 0.1)
    >>> s.values(4, steps_per_epoch=2).tolist()
    [0.0, 0.25, 0.5, 0.75]
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._validate import whole_number
from . import anneal as _anneal

UNITS = ("epoch", "step", "fraction")


@dataclass(frozen=True)
class Time:
    """A knot time with its own unit: made by :func:`steps`, :func:`epochs` or :func:`fraction`."""

    value: float
    unit: str

    def __repr__(self) -> str:
        return {"step": "steps", "epoch": "epochs", "fraction": "fraction"}[self.unit] + f"({self.value!r})"


def steps(n: float) -> Time:
    """A knot at optimizer step ``n`` (counted from 0: step 0 is the first optimizer step of the fit).

    Raises:
        ValueError: an ``n`` that is not a finite number.

    Example:
        >>> Schedule([0, steps(500), 10], [0.0, 1.0, 0.0]).bind(steps_per_epoch=100)(2.5)  # epoch 2.5 is step 250
        0.5
        >>> Schedule([0, steps(500)], [0.0, 1.0]).bind().axis  # a knot at 0 is the start in every unit
        'step'
    """
    return Time(_finite(n, "steps(n)"), "step")


def epochs(x: float) -> Time:
    """A knot at epoch position ``x`` (fractional allowed)."""
    return Time(_finite(x, "epochs(x)"), "epoch")


def fraction(x: float) -> Time:
    """A knot at fraction ``x`` of the whole fit (0 = start, 1 = end)."""
    return Time(_finite(x, "fraction(x)"), "fraction")


def epoch_position(epoch: int, batch: int, steps_per_epoch: int) -> float:
    """The epoch-axis time of batch ``batch`` of epoch ``epoch``: ``epoch + batch / steps_per_epoch``.

    The Scheduler and :meth:`Schedule.values` both use this arithmetic, so they agree to the bit.
    """
    return epoch + batch / steps_per_epoch


def _finite(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {x!r}")
    return float(x)


class Schedule:
    """A piecewise schedule.

    Args:
        knots: strictly increasing times, numbers in ``unit`` or :class:`Time` markers (``steps(500)``).
        values: the value at each knot, finite numbers, as many as knots.
        anneal: one annealing for every segment, or a sequence with one per segment: a name from
            :data:`loopkit.scheduling.schedules.anneal.ANNEALS` (``"linear"``, ``"cos"``, ``"sin"``, ``"exp"``,
            ``"step"``), a function ``f`` on [0, 1], or ``"pchip"`` for one smooth monotone cubic through all
            knots (scipy's ``PchipInterpolator``).
        unit: the unit of plain-number knots: ``"epoch"``, ``"step"`` or ``"fraction"``.

    Raises:
        TypeError: ``knots`` or ``values`` that are not sequences.
        ValueError: an unknown ``unit`` or annealing name, no knots, knots and values of different lengths,
            knots not strictly increasing, a value that is not finite, ``"exp"`` between values of different
            sign or through zero, ``"pchip"`` with one knot, or a list of annealings that is not one per segment.
            Knots in mixed units fail when the schedule is bound to a fit whose epoch length they need.
    """

    def __init__(
        self, knots: Sequence[Any], values: Sequence[float], anneal: Any = "linear", unit: str = "epoch"
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; use one of {UNITS}")
        if isinstance(knots, (str, bytes)) or not isinstance(knots, Sequence):
            raise TypeError(f"knots must be a sequence of times, got {knots!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"values must be a sequence of numbers, got {values!r}")
        if len(knots) != len(values):
            raise ValueError(
                f"got {len(knots)} knots {list(knots)!r} but {len(values)} values {list(values)!r}; "
                "give one value per knot"
            )
        if len(knots) < 1:
            raise ValueError("a Schedule needs at least one knot")
        self.unit = unit
        self.knots: tuple[Time, ...] = tuple(
            k if isinstance(k, Time) else Time(_finite(k, f"knot {k!r}"), unit) for k in knots
        )
        self.knot_values: tuple[float, ...] = tuple(_finite(v, f"value {v!r}") for v in values)
        for earlier, later in zip(self.knots, self.knots[1:]):
            if earlier.unit == later.unit and not later.value > earlier.value:
                raise ValueError(
                    f"knots must be strictly increasing, got {list(knots)!r} "
                    f"({later!r} does not come after {earlier!r})"
                )
        n_segments = max(len(self.knots) - 1, 0)
        self.pchip = anneal == "pchip"
        if self.pchip:
            if n_segments < 1:
                raise ValueError("anneal='pchip' needs at least two knots")
            self.anneals: tuple[Callable, ...] = ()
        else:
            per_segment = list(anneal) if isinstance(anneal, (list, tuple)) else [anneal] * n_segments
            if len(per_segment) != n_segments:
                raise ValueError(
                    f"got {len(per_segment)} annealings {anneal!r} for {n_segments} segments; give one "
                    "per segment (one fewer than knots) or a single one for all"
                )
            self.anneals = tuple(
                _anneal.resolve(a, v0, v1) for a, v0, v1 in zip(per_segment, self.knot_values, self.knot_values[1:])
            )
        self._jumps_allowed = False

    @classmethod
    def smooth(cls, knots: Sequence[Any], values: Sequence[float], unit: str = "epoch") -> Schedule:
        """A smooth monotone cubic (PCHIP) through many points: no overshoot between knots."""
        return cls(knots, values, anneal="pchip", unit=unit)

    @classmethod
    def _with_jumps(
        cls, knots: Sequence[float], values: Sequence[float], anneals: Sequence[Callable], unit: str
    ) -> Schedule:
        """Internal: knots may repeat, meaning a jump (the value at the repeated time is the later one)."""
        self = cls.__new__(cls)
        self.unit, self.pchip, self._jumps_allowed = unit, False, True
        self.knots = tuple(Time(float(k), unit) for k in knots)
        self.knot_values = tuple(float(v) for v in values)
        self.anneals = tuple(anneals)
        return self

    # ----------------------------------------------------------------------------------------- binding
    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: int | None = None) -> BoundSchedule:
        """Resolve every knot onto one axis for a run of this geometry; see the module docstring."""
        # A knot at 0 is the fit's start in every unit, so it does not decide the axis.
        units = {k.unit for k in self.knots if k.value != 0} or {k.unit for k in self.knots}
        axis = "step" if units == {"step"} else "epoch"
        resolved = []
        for k in self.knots:
            if k.unit == axis or k.value == 0:
                resolved.append(k.value)
            elif k.unit == "fraction":
                if n_epochs is None:
                    raise ValueError(
                        f"{self!r} has knots in fractions of the fit, which need n_epochs; "
                        "express them in epochs or steps"
                    )
                resolved.append(k.value * n_epochs)
            else:  # a step knot on the epoch axis
                if not steps_per_epoch:
                    raise ValueError(
                        f"{self!r} mixes steps with epochs, which needs a known number of steps per "
                        "epoch; the data has no length, so express every knot in steps"
                    )
                resolved.append(k.value / steps_per_epoch)
        for earlier, later in itertools.pairwise(resolved):
            if later < earlier or (later == earlier and not self._jumps_allowed):
                raise ValueError(
                    f"{self!r} resolves to knots {resolved} on the {axis} axis for steps_per_epoch="
                    f"{steps_per_epoch}, n_epochs={n_epochs}: not strictly increasing; reorder them"
                )
        if self.pchip:
            return BoundSchedule(axis, resolved, self.knot_values, (), pchip=True)
        return BoundSchedule(axis, resolved, self.knot_values, self.anneals)

    def values_at(self, t: Any, *, steps_per_epoch: int | None = None, n_epochs: int | None = None) -> Any:
        """The value at time ``t`` (a float or numpy array) on the bound axis; a shortcut for ``bind(...)``."""
        bound = self.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs)
        return bound.table(np.asarray(t, dtype=np.float64)) if np.ndim(t) else bound(float(t))

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: int | None = None) -> np.ndarray:
        """The per-step curve a run of ``n_steps`` steps applies (``Scheduler(per="step")``).

        Step ``k`` is evaluated at ``k`` on the step axis, or at ``epoch_position(*divmod(k, spe), spe)`` on
        the epoch axis. ``n_epochs`` defaults to ``ceil(n_steps / steps_per_epoch)``.
        """
        whole_number("values", "n_steps", n_steps, 0)
        if n_epochs is None and steps_per_epoch:
            n_epochs = -(-n_steps // steps_per_epoch)
        bound = self.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs)
        k = np.arange(n_steps, dtype=np.float64)
        if bound.axis == "epoch":
            if not steps_per_epoch:
                raise ValueError(f"{self!r} is timed in epochs; pass steps_per_epoch to values()")
            epoch, batch = np.divmod(k, steps_per_epoch)
            k = epoch + batch / steps_per_epoch
        return bound.table(k)

    # ----------------------------------------------------------------------------------------- plain data
    def __repr__(self) -> str:
        knots = [k.value if k.unit == self.unit else k for k in self.knots]
        if self.pchip:
            how = "'pchip'"
        else:
            names = [_anneal.name_of(a) for a in self.anneals]
            how = repr(names[0]) if len(set(names)) == 1 else repr(names)
        return f"Schedule({knots!r}, {list(self.knot_values)!r}, anneal={how}, unit={self.unit!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and (self.knots, self.knot_values, self.anneals, self.pchip) == (
            other.knots,
            other.knot_values,
            other.anneals,
            other.pchip,
        )

    def __hash__(self) -> int:
        return hash((self.knots, self.knot_values, self.pchip))


class BoundSchedule:
    """A schedule laid out on one axis: ``bound(t)`` for one time, ``bound.table(ts)`` for many."""

    def __init__(
        self,
        axis: str,
        knots: Sequence[float],
        values: Sequence[float],
        anneals: Sequence[Callable],
        pchip: bool = False,
    ) -> None:
        self.axis = axis
        self.knots = list(knots)
        self.values = list(values)
        self.anneals = list(anneals)
        self.horizon = self.knots[-1]
        self._pchip = None
        if pchip:
            from scipy.interpolate import PchipInterpolator  # lazily: scipy is heavy and rarely needed

            self._pchip = PchipInterpolator(np.asarray(self.knots), np.asarray(self.values), extrapolate=False)

    def __call__(self, t: float) -> float:
        knots = self.knots
        if t <= knots[0]:
            return self.values[0]
        if t >= knots[-1]:
            return self.values[-1]
        if self._pchip is not None:
            return float(self._pchip(t))
        i = bisect.bisect_right(knots, t) - 1
        k0 = knots[i]
        return float(self.anneals[i](self.values[i], self.values[i + 1], (t - k0) / (knots[i + 1] - k0)))

    def table(self, ts: np.ndarray) -> np.ndarray:
        """Values at many times at once (float64 array in, float64 array out)."""
        ts = np.asarray(ts, dtype=np.float64)
        knots = np.asarray(self.knots)
        out = np.empty_like(ts)
        before, after = ts <= knots[0], ts >= knots[-1]
        out[before] = self.values[0]
        out[after] = self.values[-1]
        inside = ~(before | after)
        if self._pchip is not None:
            out[inside] = self._pchip(ts[inside])
            return out
        segment = np.searchsorted(knots, ts, side="right") - 1
        for i, fn in enumerate(self.anneals):
            mask = inside & (segment == i)
            if mask.any():
                k0, k1 = self.knots[i], self.knots[i + 1]
                out[mask] = fn(self.values[i], self.values[i + 1], (ts[mask] - k0) / (k1 - k0))
        return out

    def __repr__(self) -> str:
        return f"BoundSchedule(axis={self.axis!r}, knots={self.knots!r}, values={self.values!r})"
