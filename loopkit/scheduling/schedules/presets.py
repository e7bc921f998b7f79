"""Schedules users know by name, each equal step by step to the library it comes from.

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
    >>> lr = onecycle_torch(100, 1.0)
    >>> b = lr.bind()
    >>> b(0), b(29), round(b(99), 12)
    (0.04, 1.0, 4e-06)
"""

from __future__ import annotations

from ..._validate import whole_number
from .anneal import linear
from .compose import repeat
from .schedule import Schedule


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {name}={value!r}")
    return float(value)


def _pct(pct_start: float) -> float:
    if not isinstance(pct_start, (int, float)) or not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be strictly between 0 and 1, got pct_start={pct_start!r}")
    return float(pct_start)


def onecycle(
    total: float,
    peak: float,
    *,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    anneal: str = "cos",
    unit: str = "epoch",
) -> Schedule:
    """fastai's one-cycle: from ``peak/div`` up to ``peak`` at ``pct_start * total``, down to
    ``peak/div_final`` at ``total`` (fastai's ``combined_cos(pct_start, lr_max/div, lr_max, lr_max/div_final)``).

    With the default ``unit="epoch"`` and ``total`` = the fit's epochs, step ``k`` of ``N`` is evaluated at
    position ``k/N`` of the cycle, exactly as fastai does; the final value is approached, not reached.

    Args:
        total: the cycle's length in ``unit`` (epochs by default), > 0.
        peak: the highest value (the learning rate's ``lr_max``), > 0.
        pct_start: the fraction of the cycle spent rising, in (0, 1).
        div: the start value is ``peak / div``.
        div_final: the end value is ``peak / div_final``.
        anneal: the annealing of both phases (see :class:`Schedule`).
        unit: the unit of ``total``: ``"epoch"``, ``"step"`` or ``"fraction"``.

    Returns:
        a three-knot :class:`Schedule`.

    Raises:
        ValueError: a ``total``, ``peak``, ``div`` or ``div_final`` that is not a positive number, or a
            ``pct_start`` outside (0, 1).

    Sources: L. N. Smith, "A disciplined approach to neural network hyper-parameters", arXiv:1803.09820 (2018);
    fastai's ``fit_one_cycle``.

    Example:
        >>> s = onecycle(10, 0.1)          # over 10 epochs, peaking at 0.1 at epoch 2.5
        >>> s.knots[1].value, s.knot_values
        (2.5, (0.004, 0.1, 1e-06))
    """
    total, peak, div, div_final = (
        _positive(n, v) for n, v in (("total", total), ("peak", peak), ("div", div), ("div_final", div_final))
    )
    pct = _pct(pct_start)
    return Schedule([0.0, pct * total, total], [peak / div, peak, peak / div_final], anneal=anneal, unit=unit)


def onecycle_momentum(
    total: float,
    high: float = 0.95,
    low: float = 0.85,
    *,
    pct_start: float = 0.25,
    anneal: str = "cos",
    unit: str = "epoch",
) -> Schedule:
    """fastai's momentum companion to :func:`onecycle`: ``high`` down to ``low`` and back up.

    Momentum falls while the learning rate rises and rises while it falls (for Adam-style optimizers, applied
    to ``beta1`` by :class:`~loopkit.scheduling.hyperparams.Momentum`).

    Args:
        total: the cycle's length in ``unit`` (epochs by default), > 0; the same as the ``onecycle`` it pairs with.
        high: the momentum at both ends (fastai's 0.95).
        low: the momentum at the learning rate's peak (fastai's 0.85).
        pct_start: where ``low`` is reached, as a fraction of the cycle, in (0, 1).
        anneal: the annealing of both phases.
        unit: the unit of ``total``.

    Returns:
        a three-knot :class:`Schedule`.

    Raises:
        ValueError: a ``total`` that is not a positive number, or a ``pct_start`` outside (0, 1).

    Sources: L. N. Smith, arXiv:1803.09820 (2018), section 4.3 (cyclical momentum); fastai's ``fit_one_cycle``
    ``moms=(0.95, 0.85, 0.95)``.
    """
    total = _positive("total", total)
    return Schedule([0.0, _pct(pct_start) * total, total], [high, low, high], anneal=anneal, unit=unit)


def _torch_phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    # OneCycleLR ends phase one at step pct_start*total_steps - 1 and the cycle at total_steps - 1.
    if three_phase:
        return [0.0, pct_start * total_steps - 1, 2 * pct_start * total_steps - 2, total_steps - 1.0]
    return [0.0, pct_start * total_steps - 1, total_steps - 1.0]


def _steps_count(total_steps: int) -> int:
    whole_number("onecycle_torch", "total_steps", total_steps, 2)
    return total_steps


def onecycle_torch(
    total_steps: int,
    max_lr: float,
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    """``torch.optim.lr_scheduler.OneCycleLR``'s learning rate, knots in steps, same argument names.

    Unlike fastai's, this cycle reaches its final value ``max_lr/div_factor/final_div_factor`` at the last
    step (``total_steps - 1``). ``anneal`` is ``"cos"`` or ``"linear"`` (torch's ``anneal_strategy``).
    """
    total_steps = _steps_count(total_steps)
    max_lr, div_factor, final_div_factor = (
        _positive(n, v)
        for n, v in (("max_lr", max_lr), ("div_factor", div_factor), ("final_div_factor", final_div_factor))
    )
    initial = max_lr / div_factor
    final = initial / final_div_factor
    values = [initial, max_lr, initial, final] if three_phase else [initial, max_lr, final]
    return Schedule(_torch_phase_ends(total_steps, _pct(pct_start), three_phase), values, anneal=anneal, unit="step")


def onecycle_torch_momentum(
    total_steps: int,
    *,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    """OneCycleLR's momentum cycling: ``max_momentum`` down to ``base_momentum`` while the lr rises, then back."""
    total_steps = _steps_count(total_steps)
    values = (
        [max_momentum, base_momentum, max_momentum, max_momentum]
        if three_phase
        else [max_momentum, base_momentum, max_momentum]
    )
    return Schedule(_torch_phase_ends(total_steps, _pct(pct_start), three_phase), values, anneal=anneal, unit="step")


def _warmup_knots(num_warmup_steps: int, num_training_steps: int) -> None:
    for name, value in (("num_warmup_steps", num_warmup_steps), ("num_training_steps", num_training_steps)):
        whole_number("warmup", name, value, 0)
    if num_training_steps <= num_warmup_steps:
        raise ValueError(f"num_training_steps={num_training_steps} must exceed num_warmup_steps={num_warmup_steps}")


def warmup_linear(num_warmup_steps: int, num_training_steps: int, peak: float, *, unit: str = "step") -> Schedule:
    """Linear warmup from 0 to ``peak`` over ``num_warmup_steps``, then linear decay to 0 at
    ``num_training_steps``: transformers' ``get_linear_schedule_with_warmup`` times ``peak``.

    Stepped per batch by default; with ``unit="epoch"`` and ``Scheduler(per="epoch")`` the counts are epochs,
    as when that scheduler is stepped once per epoch.
    """
    _warmup_knots(num_warmup_steps, num_training_steps)
    if num_warmup_steps == 0:
        return Schedule([0, num_training_steps], [peak, 0.0], unit=unit)
    return Schedule([0, num_warmup_steps, num_training_steps], [0.0, peak, 0.0], unit=unit)


def warmup_cosine(
    num_warmup_steps: int, num_training_steps: int, peak: float, *, floor: float = 0.0, unit: str = "step"
) -> Schedule:
    """Linear warmup to ``peak``, then a half cosine down to ``floor`` at ``num_training_steps``:
    transformers' ``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``) with ``min_lr = floor``."""
    _warmup_knots(num_warmup_steps, num_training_steps)
    if num_warmup_steps == 0:
        return Schedule([0, num_training_steps], [peak, floor], anneal="cos", unit=unit)
    return Schedule([0, num_warmup_steps, num_training_steps], [0.0, peak, floor], anneal=["linear", "cos"], unit=unit)


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
    unit: str = "step",
) -> Schedule:
    """Cosine annealing with warm restarts (SGDR).

    Cycle ``i`` lasts ``period * period_mult**i`` and anneals from ``peak * decay**i`` to ``floor`` by a half
    cosine, then jumps back up (``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` with ``T_0=period``,
    ``T_mult=period_mult``, ``eta_min=floor``; ``decay`` is timm's ``cycle_decay``). An optional linear
    ``warmup`` from ``warmup_start`` to ``peak`` comes first, and the cycles start after it (timm's
    ``warmup_prefix=True``). After the last cycle the floor holds.
    """
    _positive("period", period)
    cycle = Schedule([0, period], [peak, floor], anneal="cos", unit=unit)
    cycles_schedule = repeat(cycle, cycles, period_mult=period_mult, decay=1.0)
    if decay != 1.0:
        # Decay the peaks only; the floor stays where it is (timm's cycle_decay scales the cycle's top).
        values = list(cycles_schedule.knot_values)
        for i in range(cycles):
            values[2 * i] = peak * decay**i
        cycles_schedule = Schedule._with_jumps(
            [k.value for k in cycles_schedule.knots], values, cycles_schedule.anneals, unit
        )
    if not warmup:
        return cycles_schedule
    _positive("warmup", warmup)
    knots = [0.0] + [warmup + k.value for k in cycles_schedule.knots]
    return Schedule._with_jumps(
        knots, [warmup_start, *cycles_schedule.knot_values], [linear, *cycles_schedule.anneals], unit
    )
