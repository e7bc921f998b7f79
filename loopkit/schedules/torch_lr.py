"""torch's decay schedulers as presets, with torch's argument names; and their product (``ChainedScheduler``).

==============================================  =================================================================
preset                                          ``torch.optim.lr_scheduler``
==============================================  =================================================================
``step_lr(base_lr, step_size, gamma=0.1)``       ``StepLR``: ``base_lr * gamma ** (t // step_size)``
``multistep_lr(base_lr, milestones, gamma)``     ``MultiStepLR``: times ``gamma`` at each milestone
``exponential_lr(base_lr, gamma)``               ``ExponentialLR``: ``base_lr * gamma ** t``
``linear_lr(base_lr, start_factor, ...)``        ``LinearLR``: factor from ``start_factor`` to ``end_factor``
``constant_lr(base_lr, factor, total_iters)``    ``ConstantLR``: ``factor`` until ``total_iters``, then 1
``polynomial_lr(base_lr, total_iters, power)``   ``PolynomialLR``: ``(1 - t / total_iters) ** power``, then 0
``product(*schedules)``                          ``ChainedScheduler``: the values multiplied
==============================================  =================================================================

``base_lr`` is the optimizer's lr that torch's scheduler starts from. Time ``t`` counts the scheduler's steps:
``unit="step"`` (default) for a scheduler stepped per batch, ``unit="epoch"`` for one stepped per epoch. At
whole times the values are torch's (tests/test_schedules_torch.py drives torch's schedulers on the cases of
torch's own tests); with ``unit="epoch"`` and ``Scheduler(per="step")`` the smooth ones (linear, exponential,
polynomial) also move within an epoch, where torch, stepped per epoch, holds: use ``per="epoch"`` for that.

``step_lr`` and ``exponential_lr`` never end, like torch's: they are closed forms of time, cut by the end of
the fit. The others are plain :class:`~loopkit.schedules.schedule.Schedule` objects. A product of
torch's "chainable" schedulers is the product of their factors, so ``ChainedScheduler([LinearLR(opt, 0.4,
total_iters=3), MultiStepLR(opt, [4, 8, 10])])`` on lr 0.05 is
``product(linear_lr(0.05, 0.4, total_iters=3), multistep_lr(1.0, [4, 8, 10]))``.

Example:
    >>> b = step_lr(0.05, step_size=3).bind()
    >>> [round(b(t), 6) for t in (0, 2, 3, 9)]
    [0.05, 0.05, 0.005, 5e-05]
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from . import _args
from .anneal import ANNEALS, Power
from .schedule import Schedule, _listed, curve

_UNITS = ("step", "epoch")


def _base(call: str, base_lr: Any) -> float:
    return _args.real(call, "base_lr", base_lr, low=0)


class _Geometric:
    """``base * gamma ** (t // every)`` (``stairs``) or ``base * gamma ** (t / every)`` for ``t >= 0``; ``base``
    before 0; with ``limit``, never past it (a floor for a decay, a ceiling for a growth). A closed form with
    no last knot, bounded: by ``base`` and 0 for a decay, by ``limit`` for a growth."""

    def __init__(
        self, call: str, base: float, gamma: float, every: float, stairs: bool, unit: str, limit: float | None = None
    ) -> None:
        self.call, self.base, self.gamma, self.every, self.stairs, self.unit = call, base, gamma, every, stairs, unit
        self.limit = limit

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundGeometric:
        _args.optional_count("bind", "steps_per_epoch", steps_per_epoch)
        _args.optional_epochs("bind", n_epochs)
        return _BoundGeometric(self)

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
        """The per-step curve of a run of ``n_steps`` steps, as :meth:`Schedule.values`."""
        return curve(self, n_steps, steps_per_epoch, n_epochs)

    def __repr__(self) -> str:
        end = "" if self.limit is None else f", end_value={self.limit!r}"
        if self.call == "step_lr":
            return f"step_lr({self.base!r}, step_size={self.every}, gamma={self.gamma!r}{end}, unit={self.unit!r})"
        every_arg = "" if self.every == 1 else f", every={self.every!r}"
        return f"exponential_lr({self.base!r}, gamma={self.gamma!r}{every_arg}{end}, unit={self.unit!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Geometric) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.call, self.base, self.gamma, self.every, self.unit, self.limit))


class _BoundGeometric:
    def __init__(self, schedule: _Geometric) -> None:
        s = self.schedule = schedule
        self.axis = s.unit
        self.horizon = math.inf
        self.open_from = 0.0
        self.max_abs = s.base if s.limit is None else max(s.base, s.limit)
        # The power from which the limit holds, found once: a growth's gamma ** n overflows far beyond it.
        self._cap = math.inf
        if s.limit is not None:
            self._cap = (
                0.0 if s.limit == s.base else (math.log(s.limit) - math.log(s.base)) / math.log(s.gamma)
            )  # no limit / base: it overflows for a subnormal base

    def _power(self, t: Any) -> Any:
        s = self.schedule
        n = t / s.every
        return np.floor(n) if s.stairs else n

    def __call__(self, t: float) -> float:
        t = _args.time(t)
        s = self.schedule
        if t <= 0:
            return s.base
        n = float(self._power(t))
        if s.limit is None:
            return s.base * s.gamma**n
        if n >= self._cap:
            return s.limit
        try:
            value = s.base * s.gamma**n
        except OverflowError:  # a subnormal base growing towards its ceiling: gamma**n alone leaves the float range
            value = math.exp(math.log(s.base) + n * math.log(s.gamma))
        return max(value, s.limit) if s.gamma < 1 else min(value, s.limit)

    def table(self, ts: Any) -> np.ndarray:
        ts = _args.times(ts)
        s = self.schedule
        n = self._power(np.maximum(ts, 0.0))
        if s.limit is None:
            return np.asarray(s.base * s.gamma**n, dtype=np.float64)
        below = n < self._cap
        out = np.full_like(ts, s.limit)
        with np.errstate(over="ignore"):
            value = s.base * s.gamma ** n[below]
        big = ~np.isfinite(value)  # as in __call__: gamma**n past the float range, the product is not
        value[big] = np.exp(np.log(s.base) + n[below][big] * np.log(s.gamma))
        out[below] = np.maximum(value, s.limit) if s.gamma < 1 else np.minimum(value, s.limit)
        out[ts <= 0] = s.base
        return out

    def __repr__(self) -> str:
        return f"bound {self.schedule!r}"


def _gamma_and_limit(call: str, base: float, gamma: Any, end_value: Any) -> tuple[float, float | None]:
    """``gamma`` in [0, 1] without ``end_value``; any ``gamma`` > 0 with one, on the side it moves towards."""
    if end_value is None:
        hint = "a growing value never ends: pass end_value=, the ceiling it stops at"
        return _args.real(call, "gamma", gamma, low=0, high=1, hint=hint), None
    gamma = _args.real(call, "gamma", gamma, low=0, low_open=True, hint="a floor needs a decay that reaches it")
    limit = _args.real(call, "end_value", end_value, low=0)
    wrong_side = (gamma < 1 and limit > base) or (gamma > 1 and limit < base) or (gamma == 1 and limit != base)
    if wrong_side:
        side = "floor, <= base_lr" if gamma < 1 else "ceiling, >= base_lr" if gamma > 1 else "never reached"
        raise ValueError(
            f"{call}(base_lr={base!r}, gamma={gamma!r}, end_value={limit!r}): end_value would be a {side}; optax "
            "holds such an end_value from step 0, which is never meant: move end_value past base_lr in the "
            "direction gamma moves, or leave it out"
        )
    if base == 0.0 and gamma > 1:
        raise ValueError(
            f"{call}(base_lr=0.0, gamma={gamma!r}): a growth from 0 stays at 0 and never reaches "
            f"end_value={limit!r}; start from a base_lr > 0"
        )
    if limit == 0.0:  # a floor at 0 (gamma <= 1 here: a growth from 0 was refused) never binds: no limit
        return gamma, None
    return gamma, limit


def step_lr(
    base_lr: float, step_size: int, gamma: float = 0.1, *, end_value: float | None = None, unit: str = "step"
) -> _Geometric:
    """torch's ``StepLR``: ``base_lr * gamma ** (t // step_size)``, for as long as the fit runs.

    With ``end_value`` it is optax's ``exponential_decay(staircase=True)`` with ``transition_steps=step_size``:
    a decay (``gamma < 1``) stops at the floor ``end_value``, a growth (``gamma > 1``) at the ceiling. optax's
    ``transition_begin`` is :func:`~loopkit.schedules.compose.shift`.

    Args:
        base_lr: the starting value, a finite number >= 0.
        step_size: the time between changes, a whole number >= 1 of steps (or epochs).
        gamma: the factor per change: in [0, 1] without ``end_value``; any finite number > 0 with it.
        end_value: None, or the finite value >= 0 the schedule stops at: <= ``base_lr`` for a decay, >= it for
            a growth.
        unit: ``"step"`` or ``"epoch"``.

    Raises:
        ValueError: an argument out of its range, quoting it; ``gamma > 1`` without ``end_value`` (it would
            leave the float range); an ``end_value`` on the wrong side of ``base_lr`` (optax holds it from
            step 0).
    """
    base = _base("step_lr", base_lr)
    gamma, limit = _gamma_and_limit("step_lr", base, gamma, end_value)
    every = _args.count("step_lr", "step_size", step_size, 1)
    return _Geometric("step_lr", base, gamma, every, True, _args.unit("step_lr", unit, _UNITS), limit)


def exponential_lr(
    base_lr: float, gamma: float, *, every: float = 1, end_value: float | None = None, unit: str = "step"
) -> _Geometric:
    """torch's ``ExponentialLR``: ``base_lr * gamma ** (t / every)``, for as long as the fit runs.

    ``every`` and ``end_value`` make it optax's ``exponential_decay(init_value=base_lr,
    transition_steps=every, decay_rate=gamma, end_value=end_value)``; a growth (``gamma > 1``) needs an
    ``end_value``, its ceiling. Arguments and errors as in :func:`step_lr` (``every`` is its ``step_size``).

    Example:
        >>> [exponential_lr(1.0, 2.0, every=2, end_value=3.0).bind()(t) for t in (0, 2, 3, 4)]
        [1.0, 2.0, 2.8284271247461903, 3.0]
    """
    base = _base("exponential_lr", base_lr)
    gamma, limit = _gamma_and_limit("exponential_lr", base, gamma, end_value)
    every = _args.real("exponential_lr", "every", every, low=0, low_open=True)
    return _Geometric("exponential_lr", base, gamma, every, False, _args.unit("exponential_lr", unit, _UNITS), limit)


def multistep_lr(base_lr: float, milestones: Any, gamma: float = 0.1, *, unit: str = "step") -> Schedule:
    """torch's ``MultiStepLR``: times ``gamma`` at each milestone (a milestone given twice counts twice, as in
    torch); after the last one the value holds.

    Args:
        base_lr: a finite number >= 0.
        milestones: whole numbers >= 0, in any order (torch sorts them), at most 100,000.
        gamma: a finite number > 0.
    """
    call = "multistep_lr"
    base = _base(call, base_lr)
    listed = _listed(milestones, "milestones")
    if len(listed) > _args.MAX_KNOTS:
        raise ValueError(f"{call}: at most {_args.MAX_KNOTS:,} milestones, got {len(listed):,}")
    gamma = _args.real(call, "gamma", gamma, low=0, low_open=True)
    counts = Counter(_args.count(call, f"milestones[{i}]", m, 0) for i, m in enumerate(listed))
    knots, values, k = [0.0], [base], 0
    for m in sorted(counts):
        k += counts[m]
        knots.append(float(m))
        try:
            values.append(base * gamma**k)
        except OverflowError:
            values.append(math.inf)  # refused below, naming the call
    hold = ANNEALS["step"]
    return Schedule._with_jumps(knots, values, [hold] * (len(knots) - 1), _args.unit(call, unit, _UNITS), owner=call)


def linear_lr(
    base_lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
    *,
    unit: str = "step",
) -> Schedule:
    """torch's ``LinearLR``: ``base_lr`` times a factor moving linearly from ``start_factor`` at 0 to
    ``end_factor`` at ``total_iters``, then holding.

    Args:
        base_lr: a finite number >= 0.
        start_factor: in (0, 1], end_factor: in [0, 1], as torch requires.
        total_iters: a whole number >= 1 (at 0 torch's two formulas disagree).
    """
    call = "linear_lr"
    base = _base(call, base_lr)
    start = _args.real(call, "start_factor", start_factor, low=0, high=1, low_open=True)
    end = _args.real(call, "end_factor", end_factor, low=0, high=1)
    total = _args.count(call, "total_iters", total_iters, 1)
    return Schedule([0, total], [base * start, base * end], anneal="linear", unit=_args.unit(call, unit, _UNITS))


def constant_lr(base_lr: float, factor: float = 1.0 / 3, total_iters: int = 5, *, unit: str = "step") -> Schedule:
    """torch's ``ConstantLR``: ``base_lr * factor`` before ``total_iters``, ``base_lr`` from then on.

    Args:
        base_lr: a finite number >= 0.
        factor: in (0, 1]; torch allows 0 but then divides by zero at ``total_iters``.
        total_iters: a whole number >= 1 (at 0 torch's two formulas disagree).
    """
    call = "constant_lr"
    base = _base(call, base_lr)
    factor = _args.real(
        call,
        "factor",
        factor,
        low=0,
        high=1,
        low_open=True,
        hint="torch's ConstantLR divides by zero when a factor of 0 ends; for a pause write "
        "Schedule([0, total_iters], [0.0, base_lr], anneal='step')",
    )
    total = _args.count(call, "total_iters", total_iters, 1)
    return Schedule([0, total], [base * factor, base], anneal="step", unit=_args.unit(call, unit, _UNITS))


def polynomial_lr(base_lr: float, total_iters: int = 5, power: float = 1.0, *, unit: str = "step") -> Schedule:
    """torch's ``PolynomialLR``: ``base_lr * (1 - t / total_iters) ** power`` until ``total_iters``, then 0.

    Args:
        base_lr: a finite number >= 0.
        total_iters: a whole number >= 1 (at 0 torch's closed form divides by zero).
        power: a finite number >= 0.
    """
    call = "polynomial_lr"
    base = _base(call, base_lr)
    total = _args.count(call, "total_iters", total_iters, 1)
    power = _args.real(call, "power", power, low=0)
    end = base * 0.0**power  # 0, or base for power 0 (torch: 0 ** 0 = 1, a constant)
    return Schedule._with_jumps(
        [0, total], [base, end], [Power.exact(power)], _args.unit(call, unit, _UNITS), owner=call
    )


def product(*schedules: Any) -> Product:
    """The pointwise product of schedules: torch's ``ChainedScheduler`` over chainable schedulers; see
    :class:`Product`.

    Example:
        >>> warm_then_step = product(linear_lr(0.05, 0.4, total_iters=3), multistep_lr(1.0, [4, 8, 10]))
        >>> [round(v, 6) for v in warm_then_step.values(9).tolist()]
        [0.02, 0.03, 0.04, 0.05, 0.005, 0.005, 0.005, 0.005, 0.0005]
    """
    return Product(*schedules)


class Product:
    """The pointwise product of schedules: torch's ``ChainedScheduler`` over chainable schedulers.

    Args:
        *schedules: one or more schedules (anything with ``bind``) whose knots resolve onto one axis.

    The product ends when its last factor does; the fit may cut it where every factor allows (a closed
    form such as :func:`step_lr` allows any time). Binding refuses factors on different axes and products
    that could leave the float range.
    """

    def __init__(self, *schedules: Any) -> None:
        if not schedules:
            raise ValueError("product() needs at least one schedule, e.g. product(linear_lr(...), step_lr(1.0, 30))")
        for i, s in enumerate(schedules):
            if not callable(getattr(s, "bind", None)):
                raise TypeError(f"product: factor {i} is not a schedule, got {_args.show(s)}")
        self.schedules = tuple(schedules)

    def bind(self, *, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> _BoundProduct:
        bounds = [s.bind(steps_per_epoch=steps_per_epoch, n_epochs=n_epochs) for s in self.schedules]
        axes = {b.axis for b in bounds}
        if len(axes) != 1:
            raise ValueError(f"{self!r} has factors on the {sorted(axes)} axes; give every factor the same unit")
        biggest = 1.0
        for b in bounds:
            biggest *= getattr(b, "max_abs", 1.0)
        if not math.isfinite(biggest):
            raise ValueError(f"{self!r} can reach values beyond the float range; scale its factors down")
        return _BoundProduct(self, bounds)

    def values(self, n_steps: int, steps_per_epoch: int | None = None, n_epochs: float | None = None) -> np.ndarray:
        """The per-step curve of a run of ``n_steps`` steps, as :meth:`Schedule.values`."""
        return curve(self, n_steps, steps_per_epoch, n_epochs)

    def __repr__(self) -> str:
        return f"product({', '.join(map(repr, self.schedules))})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Product) and other.schedules == self.schedules

    def __hash__(self) -> int:
        return hash(self.schedules)


class _BoundProduct:
    def __init__(self, schedule: Product, bounds: list) -> None:
        self.schedule = schedule
        self.bounds = bounds
        self.axis = bounds[0].axis
        self.horizon = max(b.horizon for b in bounds)
        self.open_from = max(getattr(b, "open_from", b.horizon) for b in bounds)
        self.max_abs = math.prod(getattr(b, "max_abs", math.inf) for b in bounds)

    def __call__(self, t: float) -> float:
        value = 1.0
        for b in self.bounds:
            value *= b(t)
        if not math.isfinite(value):
            raise ValueError(f"{self.schedule!r} at time {t!r} is {value!r}: beyond the float range")
        return value

    def table(self, ts: Any) -> np.ndarray:
        ts = _args.times(ts)
        out = np.ones_like(ts)
        for b in self.bounds:
            out = out * b.table(ts)
        if not np.isfinite(out).all():
            raise ValueError(f"{self.schedule!r} reaches values beyond the float range")
        return out
