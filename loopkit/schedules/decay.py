"""Decays from transformers, optax and timm that torch has no scheduler for, each equal to its source's formula.

==============================  ============================================================================
preset                          source (tests/test_schedules_peers_*.py)
==============================  ============================================================================
``warmup_polynomial``           transformers ``get_polynomial_decay_schedule_with_warmup`` (``lr_end``,
                                ``power``); optax ``polynomial_schedule`` (``end_value``) with no warmup
``warmup_stable_decay``         transformers ``get_wsd_schedule``: warmup, a plateau, then a linear, cosine or
                                1-sqrt cool-down to a floor
``inverse_sqrt``                transformers ``get_inverse_sqrt_schedule``: a warmup, then
                                ``peak / sqrt(1 + t / timescale)`` for as long as the fit runs
``linear_onecycle``             optax ``linear_onecycle_schedule``: three linear phases
==============================  ============================================================================

Steps count from 0, as everywhere in loopkit: the value at step ``t`` is the peer's ``lr_lambda(t)`` (or
``schedule(t)``) times the peak.

Example:
    >>> s = warmup_stable_decay(2, 3, 4, 1.0, decay="linear")
    >>> s.values(10).tolist()
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _args
from .anneal import ANNEALS, Power, linear, power
from .compose import join
from .schedule import Schedule, curve

#: The cool-downs (and warmups) of :func:`warmup_stable_decay`, by name.
_SHAPES = {
    "linear": linear,
    "cos": ANNEALS["cos"],
    "1-sqrt": power(1.0, k=0.5),  # 1 - sqrt(p) of the way down
}


def warmup_polynomial(
    num_warmup_steps: int,
    num_training_steps: int,
    peak: float,
    *,
    end: float = 0.0,
    power: float = 1.0,
    warmup_start: float = 0.0,
    unit: str = "step",
) -> Schedule:
    """A linear warmup from ``warmup_start`` to ``peak`` over ``num_warmup_steps``, then
    ``end + (peak - end) * (1 - p) ** power`` down to ``end`` at ``num_training_steps`` (``p`` the fraction of the
    decay done), then ``end``: transformers' ``get_polynomial_decay_schedule_with_warmup(lr_end=end)`` times
    ``peak``; with no warmup, optax's ``polynomial_schedule(init_value=peak, end_value=end)``.

    Args:
        num_warmup_steps: a whole number, 0 up to ``num_training_steps``.
        num_training_steps: a whole number >= 1.
        peak: a finite number, the value after the warmup.
        end: a finite number, the value at ``num_training_steps`` (above ``peak`` makes a polynomial rise).
        warmup_start: a finite number, the value at step 0.
        power: a finite number > 0: 1 is linear, 2 falls fast then flattens, 0.5 holds high then falls.
        unit: ``"step"`` or ``"epoch"``.

    Raises:
        ValueError: an argument out of its range, quoting it.
    """
    from .presets import _warmup_args

    call = "warmup_polynomial"
    warm, total, unit = _warmup_args(call, num_warmup_steps, num_training_steps, unit)
    peak = _args.real(call, "peak", peak)
    end = _args.real(call, "end", end)
    start = _args.real(call, "warmup_start", warmup_start)
    exponent = _args.real(call, "power", power, low=0, low_open=True)
    return _phases(call, unit, start, [(warm, linear, peak), (total - warm, Power.exact(exponent), end)])


def warmup_stable_decay(
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    peak: float,
    *,
    floor: float = 0.0,
    warmup_start: float = 0.0,
    warmup: str = "linear",
    decay: str = "cos",
    unit: str = "step",
) -> Schedule:
    """Warmup-stable-decay: up from ``warmup_start`` to ``peak``, a plateau at ``peak``, then a cool-down to
    ``floor``, which holds after it (transformers' ``get_wsd_schedule``, whose ``min_lr_ratio`` is
    ``floor / peak`` and whose warmup starts at the floor: pass ``warmup_start=floor`` for that).

    Args:
        num_warmup_steps: a whole number >= 0.
        num_stable_steps: a whole number >= 0.
        num_decay_steps: a whole number >= 0 (the three not all 0).
        peak: a finite number, the stable value.
        floor: a finite number, the value the cool-down ends at.
        warmup_start: a finite number, the value at step 0.
        warmup: the warmup's shape: ``"linear"``, ``"cos"`` (half cosine) or ``"1-sqrt"``
            (``1 - sqrt(1 - p)`` of the way up).
        decay: the cool-down's shape: ``"linear"``, ``"cos"`` (half cosine, transformers' ``num_cycles=0.5``)
            or ``"1-sqrt"`` (``1 - sqrt(p)`` of the way down, Hägele et al. 2024).
        unit: ``"step"`` or ``"epoch"``.

    Raises:
        ValueError: an unknown shape or unit, a count that is not a whole number >= 0, all three counts 0, or
            a value that is not finite; each quoting the argument.

    Sources: S. Hu et al., "MiniCPM", arXiv:2404.06395 (2024); A. Hägele et al., "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations", arXiv:2405.18392 (2024).
    """
    call = "warmup_stable_decay"
    warm = _args.count(call, "num_warmup_steps", num_warmup_steps, 0)
    stable = _args.count(call, "num_stable_steps", num_stable_steps, 0)
    cool = _args.count(call, "num_decay_steps", num_decay_steps, 0)
    if warm + stable + cool == 0:
        raise ValueError(f"{call}(0, 0, 0, ...): give at least one phase a length")
    peak = _args.real(call, "peak", peak)
    floor = _args.real(call, "floor", floor)
    start = _args.real(call, "warmup_start", warmup_start)
    shapes = {}
    for arg, name in (("warmup", warmup), ("decay", decay)):
        if not isinstance(name, str) or name not in _SHAPES:
            raise ValueError(f"{call}({arg}={_args.show(name)}): use one of {list(_SHAPES)}")
        shapes[arg] = _SHAPES[name]
    # the warmup's 1-sqrt rises as 1 - sqrt(1 - p): from the peak's side it is (1 - p) ** 0.5
    up = Power.exact(0.5) if warmup == "1-sqrt" else shapes["warmup"]
    phases = [(warm, up, peak), (stable, ANNEALS["step"], peak), (cool, shapes["decay"], floor)]
    return _phases(call, _args.unit(call, unit, ("step", "epoch")), start, phases)


def _phases(call: str, unit: str, start: float, phases: list[tuple[int, Any, float]]) -> Schedule:
    """Consecutive phases ``(length, annealing, end value)`` from ``start``. A phase of length 0 is a jump to
    its end value (at the start: the schedule starts there), as the peers' formulas skip it."""
    knots, values, fns = [0.0], [start], []
    for length, fn, end in phases:
        if length == 0:
            if len(knots) == 1:
                values[0] = end
            elif end != values[-1]:
                knots.append(knots[-1])
                values.append(end)
                fns.append(ANNEALS["step"])
            continue
        knots.append(knots[-1] + length)
        values.append(end)
        fns.append(fn)
    return Schedule._with_jumps(knots, values, fns, unit, owner=call)


class _InverseSqrt:
    """``peak / sqrt((t + timescale) / timescale)`` for ``t >= 0`` (``peak`` before): no last knot."""

    def __init__(self, peak: float, timescale: float, unit: str) -> None:
        self.peak, self.timescale, self.unit = peak, timescale, unit

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundInverseSqrt:
        _args.optional_count("bind", "steps_per_epoch", steps_per_epoch)
        _args.optional_epochs("bind", n_epochs)
        return _BoundInverseSqrt(self)

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
        """The per-step curve of a run of ``n_steps`` steps, as :meth:`Schedule.values`."""
        return curve(self, n_steps, steps_per_epoch, n_epochs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _InverseSqrt) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((self.peak, self.timescale, self.unit))

    def __repr__(self) -> str:
        return f"inverse_sqrt({self.peak!r}, timescale={self.timescale!r}, unit={self.unit!r})"


class _BoundInverseSqrt:
    def __init__(self, schedule: _InverseSqrt) -> None:
        self.schedule = schedule
        self.axis = schedule.unit
        self.horizon = math.inf
        self.open_from = 0.0
        self.max_abs = abs(schedule.peak)

    def __call__(self, t: float) -> float:
        t = max(_args.time(t), 0.0)
        s = self.schedule
        return s.peak * (1.0 / math.sqrt((t + s.timescale) / s.timescale))

    def table(self, ts: Any) -> np.ndarray:
        ts = np.maximum(_args.times(ts), 0.0)
        s = self.schedule
        return s.peak * (1.0 / np.sqrt((ts + s.timescale) / s.timescale))


def inverse_sqrt(
    peak: float,
    num_warmup_steps: int = 0,
    *,
    timescale: float | None = None,
    warmup_start: float = 0.0,
    unit: str = "step",
) -> Any:
    """A linear warmup from ``warmup_start`` to ``peak``, then ``peak / sqrt(1 + t / timescale)`` (``t`` counted
    from the warmup's end) for as long as the fit runs: transformers' ``get_inverse_sqrt_schedule`` times
    ``peak``. It has no horizon, so any fit length suits it (the fit may end it anywhere after the warmup).

    Args:
        peak: a finite number.
        num_warmup_steps: a whole number >= 0.
        timescale: a finite number > 0; default ``num_warmup_steps``, or 10,000 without a warmup (transformers').
        warmup_start: a finite number.
        unit: ``"step"`` or ``"epoch"``.

    Raises:
        ValueError: an argument out of its range, quoting it.

    Example:
        >>> [round(v, 6) for v in inverse_sqrt(10.0, 2).values(6).tolist()]  # transformers' test case
        [0.0, 5.0, 10.0, 8.164966, 7.071068, 6.324555]
    """
    call = "inverse_sqrt"
    peak = _args.real(call, "peak", peak)
    warm = _args.count(call, "num_warmup_steps", num_warmup_steps, 0)
    scale = (
        float(warm or 10_000) if timescale is None else _args.real(call, "timescale", timescale, low=0, low_open=True)
    )
    start = _args.real(call, "warmup_start", warmup_start)
    unit = _args.unit(call, unit, ("step", "epoch"))
    decay = _InverseSqrt(peak, scale, unit)
    if warm == 0:
        return decay
    return join([Schedule([0, warm], [start, peak], unit=unit), decay], [warm])


def linear_onecycle(
    transition_steps: int,
    peak_value: float,
    *,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """optax's ``linear_onecycle_schedule``: linearly from ``peak_value / div_factor`` up to ``peak_value`` at
    step ``int(pct_start * transition_steps)``, back down to ``peak_value / div_factor`` at step
    ``int(pct_final * transition_steps)``, then down to that divided by ``final_div_factor`` at
    ``transition_steps``, where it holds. Knots in steps.

    Args:
        transition_steps: a whole number >= 1.
        peak_value: a finite number.
        pct_start: a fraction, where the peak is (``0 < int(pct_start * transition_steps) <
            int(pct_final * transition_steps) < transition_steps``).
        pct_final: a fraction, where the second phase ends.
        div_factor: a finite number > 0: the start is ``peak_value / div_factor``.
        final_div_factor: a finite number > 0: the end is ``peak_value / final_div_factor``.

    Raises:
        ValueError: an argument out of its range, or phases of no length (where optax silently skips a phase),
            quoting the arguments.

    Example:
        >>> s = linear_onecycle(10, 1000.0, pct_final=0.7, div_factor=10, final_div_factor=100)
        >>> [round(v, 9) for v in s.values(12).tolist()]
        [100.0, 400.0, 700.0, 1000.0, 775.0, 550.0, 325.0, 100.0, 67.0, 34.0, 1.0, 1.0]
    """
    call = "linear_onecycle"
    total = _args.count(call, "transition_steps", transition_steps, 1)
    peak = _args.real(call, "peak_value", peak_value)
    pct_start = _args.real(call, "pct_start", pct_start, low=0, high=1)
    pct_final = _args.real(call, "pct_final", pct_final, low=0, high=1)
    div = _args.real(call, "div_factor", div_factor, low=0, low_open=True)
    final_div = _args.real(call, "final_div_factor", final_div_factor, low=0, low_open=True)
    b1, b2 = int(pct_start * total), int(pct_final * total)
    if not 0 < b1 < b2 < total:
        raise ValueError(
            f"{call}(transition_steps={total}, pct_start={pct_start!r}, pct_final={pct_final!r}): the phases end at "
            f"steps {b1}, {b2} and {total}, which must be increasing and after 0 (optax would skip a phase); "
            "use more transition_steps or fractions further apart"
        )
    init = peak / div
    # optax multiplies the scales in turn: init, init * div, then / div, then / final_div
    values = [init, init * div]
    values += [values[-1] * (1.0 / div), values[-1] * (1.0 / div) * (1.0 / final_div)]
    return Schedule([0, b1, b2, total], values, anneal="linear", unit="step")
