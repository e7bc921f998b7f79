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

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _args, anneal as _anneal
from .bound import BoundSchedule, check_knots

UNITS = ("epoch", "step", "fraction")


@dataclass(frozen=True)
class Time:
    """A knot time with its own unit: made by :func:`steps`, :func:`epochs` or :func:`fraction`."""

    value: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"Time(unit={self.unit!r}): use one of {UNITS}")
        object.__setattr__(self, "value", _args.real("Time", "value", self.value))

    @classmethod
    def _trusted(cls, value: float, unit: str) -> Time:
        """Internal: a Time from a value already checked (a finite float) in a known unit; no checks, for speed."""
        self = object.__new__(cls)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "unit", unit)
        return self

    def __repr__(self) -> str:
        return {"step": "steps", "epoch": "epochs", "fraction": "fraction"}[self.unit] + f"({self.value!r})"


def steps(n: float) -> Time:
    """A knot at optimizer step ``n`` (counted from 0: step 0 is the first optimizer step of the fit).

    Raises:
        ValueError: an ``n`` that is not a finite real number (int, float, numpy scalar or 0-d tensor).

    Example:
        >>> Schedule([0, steps(500), 10], [0.0, 1.0, 0.0]).bind(steps_per_epoch=100)(2.5)  # epoch 2.5 is step 250
        0.5
        >>> Schedule([0, steps(500)], [0.0, 1.0]).bind().axis  # a knot at 0 is the start in every unit
        'step'
    """
    return Time(_args.real("steps", "n", n), "step")


def epochs(x: float) -> Time:
    """A knot at epoch position ``x`` (fractional allowed); ``x`` a finite real number."""
    return Time(_args.real("epochs", "x", x), "epoch")


def fraction(x: float) -> Time:
    """A knot at fraction ``x`` of the whole fit (0 = start, 1 = end); ``x`` a finite real number."""
    return Time(_args.real("fraction", "x", x), "fraction")


def epoch_position(epoch: int, batch: int, steps_per_epoch: int) -> float:
    """The epoch-axis time of batch ``batch`` of epoch ``epoch``: ``epoch + batch / steps_per_epoch``.

    The Scheduler and :meth:`Schedule.values` both use this arithmetic, so they agree to the bit. All three are
    whole numbers (``steps_per_epoch`` >= 1); ``ValueError`` otherwise.
    """
    epoch = _args.count("epoch_position", "epoch", epoch, 0)
    batch = _args.count("epoch_position", "batch", batch, 0)
    steps_per_epoch = _args.count("epoch_position", "steps_per_epoch", steps_per_epoch, 1)
    return epoch + batch / steps_per_epoch


def _finite(x: Any, what: str) -> float:
    if not _args.is_real(x):
        raise ValueError(f"{what} must be a finite real number, got {_args.show(x)}")
    try:
        return _args.real("Schedule", what, x)
    except ValueError:
        raise ValueError(f"{what} must be a finite number, got {_args.show(x)}") from None


def _listed(items: Any, what: str) -> list:
    """A sequence, 1-d numpy array or 1-d tensor as a list; strings, mappings and scalars are refused."""
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__len__") or not hasattr(items, "__iter__"):
        kind = "times" if what == "knots" else "numbers"
        raise TypeError(f"{what} must be a sequence of {kind}, got {_args.show(items)}")
    if getattr(items, "ndim", 1) != 1:
        raise TypeError(f"{what} must be one-dimensional, got an array of shape {tuple(items.shape)}")
    return list(items)


class Schedule:
    """A piecewise schedule.

    Args:
        knots: strictly increasing times, numbers in ``unit`` or :class:`Time` markers (``steps(500)``).
        values: the value at each knot, finite numbers, as many as knots.
        anneal: one annealing for every segment, or a sequence with one per segment: a name from
            :data:`loopkit.schedules.anneal.ANNEALS` (``"linear"``, ``"cos"``, ``"sin"``, ``"exp"``,
            ``"step"``), a function ``f`` on [0, 1], or ``"pchip"`` for one smooth monotone cubic through all
            knots (scipy's ``PchipInterpolator``).
        unit: the unit of plain-number knots: ``"epoch"``, ``"step"`` or ``"fraction"``.

    Raises:
        TypeError: ``knots`` or ``values`` that are not sequences (lists, tuples, 1-d arrays or tensors) of
            real numbers.
        ValueError: an unknown ``unit`` or annealing name, no knots or more than 100,000, knots and values of
            different lengths, knots not strictly increasing, a knot or value that is not finite, neighbouring
            knots or values too far apart for float arithmetic, ``"exp"`` between values of different
            sign or through zero, ``"pchip"`` with one knot, or a list of annealings that is not one per segment.
            Knots in mixed units fail when the schedule is bound to a fit whose epoch length they need.
    """

    def __init__(
        self, knots: Sequence[Any], values: Sequence[float], anneal: Any = "linear", unit: str = "epoch"
    ) -> None:
        if not isinstance(unit, str) or unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}; use one of {UNITS}")
        knots = _listed(knots, "knots")
        values = _listed(values, "values")
        if len(knots) != len(values):
            raise ValueError(
                f"got {len(knots)} knots {list(knots)!r} but {len(values)} values {list(values)!r}; "
                "give one value per knot"
            )
        if len(knots) < 1:
            raise ValueError("a Schedule needs at least one knot")
        if len(knots) > _args.MAX_KNOTS:
            raise ValueError(f"a Schedule takes at most {_args.MAX_KNOTS:,} knots, got {len(knots):,}")
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
        for earlier, later in zip(self.knots, self.knots[1:]):
            if earlier.unit == later.unit and not math.isfinite(later.value - earlier.value):
                raise ValueError(f"knots {earlier!r} and {later!r} are too far apart for float arithmetic")
        n_segments = max(len(self.knots) - 1, 0)
        self.pchip = isinstance(anneal, str) and anneal == "pchip"
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
        self._open_from: float | None = None

    @classmethod
    def smooth(cls, knots: Sequence[Any], values: Sequence[float], unit: str = "epoch") -> Schedule:
        """A smooth monotone cubic (PCHIP) through many points: no overshoot between knots."""
        return cls(knots, values, anneal="pchip", unit=unit)

    @classmethod
    def _with_jumps(
        cls,
        knots: Sequence[float],
        values: Sequence[float],
        anneals: Sequence[Callable],
        unit: str,
        *,
        owner: str = "Schedule",
        open_from: float | None = None,
    ) -> Schedule:
        """Internal: knots may repeat, meaning a jump (the value at the repeated time is the later one).

        Checked like a user's schedule (:func:`check_knots`); ``owner`` names the call in the message.
        ``open_from``: the fit may end this schedule anywhere from this time on (see ``BoundSchedule``).
        """
        knots, values = [float(k) for k in knots], [float(v) for v in values]
        if len(knots) > _args.MAX_KNOTS:
            raise ValueError(f"{owner} would make {len(knots):,} knots, more than {_args.MAX_KNOTS:,}")
        check_knots(owner, knots, values, anneals)
        if any(k1 < k0 for k0, k1 in itertools.pairwise(knots)):
            raise ValueError(f"{owner} would put knots out of order (float rounding); use smaller times")
        self = cls.__new__(cls)
        self.unit, self.pchip, self._jumps_allowed = unit, False, True
        self.knots = tuple(Time._trusted(k, unit) for k in knots)
        self.knot_values = tuple(values)
        self.anneals = tuple(anneals)
        self._open_from = open_from
        return self

    # ----------------------------------------------------------------------------------------- binding
    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> BoundSchedule:
        """Resolve every knot onto one axis for a run of this geometry; see the module docstring.

        ``steps_per_epoch`` is a whole number >= 1 or None; ``n_epochs`` a number > 0 (fractional for a fit
        bounded by ``max_steps``) or None. Raises ``ValueError`` when the
        knots need a number that is missing, or resolve out of order or beyond the float range.
        """
        steps_per_epoch = _args.optional_count("bind", "steps_per_epoch", steps_per_epoch)
        n_epochs = _args.optional_epochs("bind", n_epochs)
        # A knot at 0 is the fit's start in every unit, so it does not decide the axis.
        units = {k.unit for k in self.knots if k.value != 0} or {k.unit for k in self.knots}
        axis = "step" if units == {"step"} else "epoch"
        times = list(self.knots)
        if self._open_from is not None:
            times.append(Time(self._open_from, self.unit))
        resolved = []
        if self._open_from is None and all(k.unit == axis or k.value == 0 for k in self.knots):
            times = []  # one unit (a knot at 0 is 0 in every unit): nothing to convert
            resolved = [k.value for k in self.knots]
        for k in times:
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
        open_from = resolved.pop() if self._open_from is not None else None
        order = np.diff(np.asarray(resolved, dtype=np.float64))
        if (order < 0).any() or (not self._jumps_allowed and (order == 0).any()):
            raise ValueError(
                f"{self!r} resolves to knots {resolved} on the {axis} axis for steps_per_epoch="
                f"{steps_per_epoch}, n_epochs={n_epochs}: not strictly increasing; reorder them"
            )

        def owner() -> str:
            return f"{self!r} on the {axis} axis"

        if self.pchip:
            return BoundSchedule(axis, resolved, self.knot_values, (), pchip=True, owner=owner)
        return BoundSchedule(axis, resolved, self.knot_values, self.anneals, open_from=open_from, owner=owner)

    def values_at(self, t: Any, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> Any:
        """The value at time ``t`` (a float or numpy array) on the bound axis; a shortcut for ``bind(...)``."""
        bound = self.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs)
        return bound.table(t) if np.ndim(t) else bound(t)

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
        """The per-step curve a run of ``n_steps`` steps applies (``Scheduler(per="step")``): :func:`curve`."""
        return curve(self, n_steps, steps_per_epoch, n_epochs)

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
        return isinstance(other, Schedule) and (
            self.knots,
            self.knot_values,
            self.anneals,
            self.pchip,
            self._open_from,
        ) == (other.knots, other.knot_values, other.anneals, other.pchip, other._open_from)

    def __hash__(self) -> int:
        return hash((self.knots, self.knot_values, self.pchip))


def curve(schedule: Any, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
    """The per-step curve a run of ``n_steps`` steps applies with ``Scheduler(per="step")``, for any schedule.

    Step ``k`` is evaluated at ``k`` on the step axis, or at ``epoch_position(*divmod(k, spe), spe)`` on
    the epoch axis. ``n_epochs`` defaults to ``ceil(n_steps / steps_per_epoch)``. ``n_steps`` is a whole
    number >= 0, ``steps_per_epoch`` one >= 1 or None, ``n_epochs`` a number > 0 or None.
    """
    n_steps = _args.count("values", "n_steps", n_steps, 0)
    steps_per_epoch = _args.optional_count("values", "steps_per_epoch", steps_per_epoch)
    n_epochs = _args.optional_epochs("values", n_epochs)
    if n_epochs is None and steps_per_epoch:
        n_epochs = max(-(-n_steps // steps_per_epoch), 1)
    bound = schedule.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs)
    k = np.arange(n_steps, dtype=np.float64)
    if bound.axis == "epoch":
        if not steps_per_epoch:
            raise ValueError(f"{schedule!r} is timed in epochs; pass steps_per_epoch to values()")
        epoch, batch = np.divmod(k, steps_per_epoch)
        k = epoch + batch / steps_per_epoch
    return bound.table(k)
