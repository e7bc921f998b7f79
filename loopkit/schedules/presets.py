"""Schedules users know by name, each equal step by step to the library it comes from (the one-cycle policies are
in :mod:`loopkit.schedules.onecycle`).

==============================  ============================================================================
preset                          reference it matches (tests/test_schedules_presets.py)
==============================  ============================================================================
``onecycle``                    fastai ``fit_one_cycle`` (cosine phases, value at step k of N taken at k/N)
``onecycle_momentum``           fastai's ``moms=(0.95, 0.85, 0.95)`` companion
``onecycle_torch``              ``torch.optim.lr_scheduler.OneCycleLR`` (last step reaches the final value)
``onecycle_torch_momentum``     OneCycleLR's ``cycle_momentum`` (base_momentum, max_momentum)
``warmup_linear``               transformers ``get_linear_schedule_with_warmup``
``warmup_cosine``               transformers ``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``), with
                                a floor as in ``get_cosine_with_min_lr_schedule_with_warmup``
``cosine_restarts``             ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (``T_0``,
                                ``T_mult``, ``eta_min``), plus timm's ``cycle_decay`` and a warmup prefix
==============================  ============================================================================

Example:
    >>> lr = warmup_linear(10, 100, 1.0)
    >>> b = lr.bind()
    >>> b(0), b(5), b(10), b(55), b(100)
    (0.0, 0.5, 1.0, 0.5, 0.0)
"""

from __future__ import annotations

from typing import Any

from . import _args
from .anneal import ANNEALS, cosine, linear
from .compose import _cycles
from .schedule import Schedule


def _warmup_args(call: str, num_warmup_steps: Any, num_training_steps: Any, unit: Any) -> tuple[int, int, str]:
    warm = _args.count(call, "num_warmup_steps", num_warmup_steps, 0)
    total = _args.count(call, "num_training_steps", num_training_steps, 1)
    if warm > total:
        raise ValueError(
            f"{call}(num_warmup_steps={warm}, num_training_steps={total}): the warmup would outlast training "
            "(transformers would never reach the peak); use num_warmup_steps <= num_training_steps"
        )
    return warm, total, _args.unit(call, unit, ("step", "epoch"))


def warmup_linear(
    num_warmup_steps: int,
    num_training_steps: int,
    peak: float,
    *,
    warmup_start: float = 0.0,
    unit: str = "step",
) -> Schedule:
    """Linear warmup from ``warmup_start`` (default 0) to ``peak`` over ``num_warmup_steps``, then linear decay
    to 0 at ``num_training_steps``: transformers' ``get_linear_schedule_with_warmup`` times ``peak``.

    A warmup as long as training (``num_warmup_steps == num_training_steps``) ends training just below the
    peak and then drops to 0, as transformers does. Stepped per batch by default; with ``unit="epoch"`` and
    ``Scheduler(per="epoch")`` the counts are epochs, as when that scheduler is stepped once per epoch.

    Args:
        num_warmup_steps: a whole number, 0 up to ``num_training_steps``.
        num_training_steps: a whole number >= 1.
        peak: a finite number.
        warmup_start: a finite number.
    """
    warm, total, unit = _warmup_args("warmup_linear", num_warmup_steps, num_training_steps, unit)
    peak = _args.real("warmup_linear", "peak", peak)
    start = _args.real("warmup_linear", "warmup_start", warmup_start)
    return _warmup_then(warm, total, start, peak, 0.0, "linear", unit, "warmup_linear")


def warmup_cosine(
    num_warmup_steps: int,
    num_training_steps: int,
    peak: float,
    *,
    floor: float = 0.0,
    warmup_start: float = 0.0,
    exponent: float = 1.0,
    unit: str = "step",
) -> Schedule:
    """Linear warmup from ``warmup_start`` (default 0) to ``peak``, then a half cosine down to ``floor`` at
    ``num_training_steps``: transformers' ``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``) with
    ``min_lr = floor``; with ``warmup_start`` and ``exponent`` it is optax's
    ``warmup_cosine_decay_schedule(init_value=warmup_start, end_value=floor, exponent=exponent)``.

    Past ``num_training_steps`` the floor holds, where transformers' cosine climbs again (a deliberate
    difference, pinned by tests/test_schedules_peers_transformers.py).

    Arguments as in :func:`warmup_linear`; ``floor`` a finite number; ``exponent`` a finite number > 0: the
    decay is ``floor + (peak - floor) * ((1 + cos(pi p)) / 2) ** exponent``.
    """
    warm, total, unit = _warmup_args("warmup_cosine", num_warmup_steps, num_training_steps, unit)
    peak = _args.real("warmup_cosine", "peak", peak)
    floor = _args.real("warmup_cosine", "floor", floor)
    start = _args.real("warmup_cosine", "warmup_start", warmup_start)
    exponent = _args.real("warmup_cosine", "exponent", exponent, low=0, low_open=True)
    decay = "cos" if exponent == 1.0 else cosine(exponent)
    return _warmup_then(warm, total, start, peak, floor, decay, unit, "warmup_cosine")


def _warmup_then(
    warm: int, total: int, start: float, peak: float, end: float, decay: Any, unit: str, call: str
) -> Schedule:
    fn = ANNEALS[decay] if isinstance(decay, str) else decay
    if warm == 0:
        return Schedule._with_jumps([0, total], [peak, end], [fn], unit, owner=call)
    if warm == total:  # warmup only; at num_training_steps (after the fit) the decay's end value
        return Schedule._with_jumps([0, warm, warm], [start, peak, end], [linear, ANNEALS["step"]], unit, owner=call)
    return Schedule._with_jumps([0, warm, total], [start, peak, end], [linear, fn], unit, owner=call)


def cosine_restarts(
    period: float,
    peak: float,
    *,
    cycles: int,
    floor: float = 0.0,
    period_mult: float = 1.0,
    decay: float = 1.0,
    warmup: float = 0,
    warmup_start: float = 0.0,
    warmup_prefix: bool = True,
    k_decay: float = 1.0,
    unit: str = "step",
) -> Schedule:
    """Cosine annealing with warm restarts (SGDR).

    Cycle ``i`` lasts ``period * period_mult**i`` and anneals from ``peak * decay**i`` to ``floor`` by a half
    cosine, then jumps back up (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` with ``T_0=period``,
    ``T_mult=period_mult``, ``eta_min=floor``; ``decay`` is timm's ``cycle_decay``). An optional linear
    ``warmup`` from ``warmup_start`` to ``peak`` comes first, and the cycles start after it (timm's
    ``warmup_prefix=True``); with ``warmup_prefix=False`` the warmup is laid over the first steps of the
    cycles instead, which start at 0 (timm's default). After the last cycle the floor holds. ``k_decay`` is
    timm's: each cycle follows ``cos(pi * p ** k_decay)`` (``p`` its fraction done).

    The fit may end inside the last of two or more cycles: the Scheduler then cuts it there, as torch's
    scheduler (which never ends) is cut by the end of training; cycles of 10, 20 and 40 steps suit a 50-step
    fit with no policy flag. A fit ending before the last cycle starts is still a mismatch (fewer cycles than
    asked), and so is a fit ending inside a single cycle (``cycles=1``), which would never reach its floor.

    Args:
        period: the first cycle's length in ``unit``, a finite number > 0.
        peak: a finite number.
        floor: a finite number.
        warmup_start: a finite number.
        cycles: a whole number >= 1 (at most 49,999: a schedule has at most 100,000 knots).
        period_mult: a finite number > 0.
        decay: a finite number > 0.
        warmup: a finite number >= 0.
        warmup_prefix: True (the cycles start after the warmup) or False (the warmup covers their start).
        k_decay: a finite number > 0.
    """
    call = "cosine_restarts"
    period = _args.real(call, "period", period, low=0, low_open=True)
    peak = _args.real(call, "peak", peak)
    floor = _args.real(call, "floor", floor)
    cycles = _args.count(call, "cycles", cycles, 1, _args.MAX_KNOTS // 2 - 1)
    period_mult = _args.real(call, "period_mult", period_mult, low=0, low_open=True)
    decay = _args.real(call, "decay", decay, low=0, low_open=True)
    warmup = _args.real(call, "warmup", warmup, low=0)
    warmup_start = _args.real(call, "warmup_start", warmup_start)
    if not isinstance(warmup_prefix, bool):
        raise TypeError(f"{call}(warmup_prefix={_args.show(warmup_prefix)}): pass True or False")
    k_decay = _args.real(call, "k_decay", k_decay, low=0, low_open=True)
    unit = _args.unit(call, unit)
    cos = ANNEALS["cos"] if k_decay == 1.0 else cosine(1.0, k=k_decay)
    knots, values, anneals = _cycles([0.0, period], [peak, floor], [cos], cycles, period_mult, 1.0, call)
    if decay != 1.0:
        # Decay the peaks only; the floor stays where it is (timm's cycle_decay scales the cycle's top).
        _cycles([0.0, period], [peak, 0.0], [cos], cycles, 1.0, decay, call)  # refuses peaks beyond float range
        for i in range(cycles):
            values[2 * i] = peak * decay**i
    last_start = knots[-2]
    if warmup and not warmup_prefix:
        from .compose import join, shift

        # timm's warmup_prefix=False: the warmup replaces the cycles' first `warmup` steps; they keep their time
        cycled = Schedule._with_jumps(
            knots, values, anneals, unit, owner=call, open_from=last_start if cycles > 1 else None
        )
        ramp = Schedule([0.0, warmup], [warmup_start, peak], unit=unit)
        if warmup >= knots[-1]:
            raise ValueError(
                f"{call}(warmup={warmup!r}, warmup_prefix=False): the warmup covers every cycle (they end at "
                f"{knots[-1]:g}); shorten the warmup or use warmup_prefix=True"
            )
        return join([ramp, shift(cycled, -warmup)], [warmup])
    if warmup:
        knots = [0.0] + [warmup + k for k in knots]
        values = [warmup_start, *values]
        anneals = [linear, *anneals]
        last_start += warmup
    # Only a last cycle after others may be cut by the fit: a single cycle cut short never reaches its floor,
    # which is the mistake the horizon check exists to catch (issue 25).
    open_from = last_start if cycles > 1 else None
    return Schedule._with_jumps(knots, values, anneals, unit, owner=call, open_from=open_from)
