"""The one-cycle policy: fastai's (:func:`onecycle`, :func:`onecycle_momentum`: cosine or linear halves around a
peak at ``pct_start``) and torch's ``OneCycleLR`` (:func:`onecycle_torch`, :func:`onecycle_torch_momentum`: torch's
step indexing and its three-phase variant), each with its source's argument names and conventions (the table in
:mod:`loopkit.schedules.presets` names the references the tests compare with).

Example:
    >>> lr = onecycle_torch(100, 1.0)
    >>> b = lr.bind()
    >>> b(0), b(29), round(b(99), 12)
    (0.04, 1.0, 4e-06)
"""

from __future__ import annotations

from typing import Any

from . import _args
from .anneal import ANNEALS
from .compose import _Partial
from .schedule import Schedule


def _anneal_name(call: str, anneal: Any, allowed: tuple[str, ...] | None = None) -> str:
    names = allowed or tuple(n for n in ANNEALS if n != "const")
    if not isinstance(anneal, str) or anneal not in names:
        raise ValueError(f"{call}(anneal={_args.show(anneal)}): unknown annealing; use one of {list(names)}")
    return anneal


def _fastai_cycle(
    call: str, total: Any, pct_start: Any, v0: float, v1: float, v2: float, anneal: str, unit: str
) -> Schedule:
    """fastai's ``combined_cos(pct, v0, v1, v2)`` over ``total``: ``pct_start`` 0 or 1 leaves one phase, as
    fastai's ``combine_scheds`` does (at 0 the cycle starts at ``v1``; at 1 it never leaves the first phase)."""
    total = _args.real(call, "total", total, low=0, low_open=True)
    pct = _args.pct(call, pct_start)
    anneal = _anneal_name(call, anneal)
    unit = _args.unit(call, unit)
    if pct == 0:
        return Schedule([0.0, total], [v1, v2], anneal=anneal, unit=unit)
    if pct == 1:
        return Schedule([0.0, total], [v0, v1], anneal=anneal, unit=unit)
    middle = pct * total
    if not 0 < middle < total:  # pct so close to 0 or 1 that pct * total rounds onto an end
        raise ValueError(f"{call}(total={total!r}, pct_start={pct!r}): pct_start * total rounds onto an end")
    return Schedule([0.0, middle, total], [v0, v1, v2], anneal=anneal, unit=unit)


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
        total: the cycle's length in ``unit`` (epochs by default), a finite number > 0.
        peak: the highest value (the learning rate's ``lr_max``), a finite number > 0.
        pct_start: the fraction of the cycle spent rising, in [0, 1]: 0 starts at the peak (a cosine decay
            only), 1 is a warmup only, as fastai's ``combine_scheds`` does.
        div: the start value is ``peak / div`` (finite, > 0).
        div_final: the end value is ``peak / div_final`` (finite, > 0).
        anneal: the annealing of both phases (see :class:`Schedule`).
        unit: the unit of ``total``: ``"epoch"``, ``"step"`` or ``"fraction"``.

    Returns:
        a :class:`Schedule` with three knots (two when ``pct_start`` is 0 or 1).

    Raises:
        ValueError: an argument that is not a finite number in its range, or ``peak / div`` underflowing to 0.
        TypeError: an argument that is not a real number.

    Sources: L. N. Smith, "A disciplined approach to neural network hyper-parameters", arXiv:1803.09820 (2018);
    fastai's ``fit_one_cycle``.

    Example:
        >>> s = onecycle(10, 0.1)          # over 10 epochs, peaking at 0.1 at epoch 2.5
        >>> s.knots[1].value, s.knot_values
        (2.5, (0.004, 0.1, 1e-06))
    """
    peak, div, div_final = (
        _args.real("onecycle", n, v, low=0, low_open=True)
        for n, v in (("peak", peak), ("div", div), ("div_final", div_final))
    )
    start, end = peak / div, peak / div_final
    if start == 0 or end == 0:
        raise ValueError(f"onecycle(peak={peak!r}, div={div!r}, div_final={div_final!r}): peak / div underflows to 0")
    return _fastai_cycle("onecycle", total, pct_start, start, peak, end, anneal, unit)


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
    to ``beta1`` by :class:`~loopkit.scheduling.optimizer_hyperparams.Momentum`).

    Args:
        total: the cycle's length in ``unit`` (epochs by default), > 0; the same as the ``onecycle`` it pairs with.
        high: the momentum at both ends (fastai's 0.95), a finite number.
        low: the momentum at the learning rate's peak (fastai's 0.85), a finite number.
        pct_start: where ``low`` is reached, as a fraction of the cycle, in [0, 1] (as in :func:`onecycle`).
        anneal: the annealing of both phases.
        unit: the unit of ``total``.

    Returns:
        a :class:`Schedule` with three knots (two when ``pct_start`` is 0 or 1).

    Raises:
        ValueError: a ``total`` that is not a positive number, a ``pct_start`` outside [0, 1], a non-finite momentum.

    Sources: L. N. Smith, arXiv:1803.09820 (2018), section 4.3 (cyclical momentum); fastai's ``fit_one_cycle``
    ``moms=(0.95, 0.85, 0.95)``.
    """
    high = _args.real("onecycle_momentum", "high", high)
    low = _args.real("onecycle_momentum", "low", low)
    return _fastai_cycle("onecycle_momentum", total, pct_start, high, low, high, anneal, unit)


def _torch_cycle(
    call: str, total_steps: Any, pct_start: Any, three_phase: Any, anneal: Any, values: list[float]
) -> Schedule:
    """OneCycleLR's phases as a Schedule in steps, evaluated on steps 0 .. total_steps - 1 exactly as torch does.

    torch ends phase one at step ``e1 = pct_start * total_steps - 1`` (and phase two of three at ``2 e1``) and
    evaluates step ``t`` in the first phase with ``t <= end``, from the previous phase's end (0 for the first).
    So an ``e1`` below 0 (``total_steps`` 1 to 3 at the default ``pct_start``) skips the warmup and starts the
    decay from ``max_lr`` at the negative ``e1``, and a phase ending past the last step is cut there.
    ``e1 == 0`` is where torch divides by zero at step 0: refused, naming the arguments.
    """
    total_steps = _args.count(call, "total_steps", total_steps, 1, _args.MAX_KNOTS)
    pct = _args.pct(call, pct_start)
    if not isinstance(three_phase, bool):
        raise TypeError(f"{call}(three_phase={_args.show(three_phase)}): pass True or False")
    anneal = _anneal_name(call, anneal, ("cos", "linear"))
    e1 = float(pct * total_steps) - 1
    if e1 == 0:
        raise ValueError(
            f"{call}(total_steps={total_steps}, pct_start={pct!r}): the warmup would end at step "
            f"pct_start * total_steps - 1 = 0, where torch's OneCycleLR divides by zero; choose pct_start "
            f"other than 1/total_steps = {1 / total_steps:g}, or more total_steps"
        )
    last = total_steps - 1.0
    if three_phase:
        ends = [e1, float(2 * pct * total_steps) - 2, last]
        phase_values = [(values[0], values[1]), (values[1], values[2]), (values[2], values[3])]
    else:
        ends = [e1, last]
        phase_values = [(values[0], values[1]), (values[1], values[2])]
    fn = ANNEALS[anneal]
    knots: list[float] = []
    vals: list[float] = []
    fns: list = []
    start = 0.0
    for i, ((a, b), end) in enumerate(zip(phase_values, ends)):
        is_last = i == len(ends) - 1
        # torch uses this phase for the steps t in [0, last] with start < t <= end (t >= 0 for the first).
        lo = start if i > 0 else -1.0
        hi = last if is_last else min(end, last)
        if hi > lo and hi >= 0 and not (i > 0 and start >= last):
            if knots:
                fns.append(ANNEALS["step"])  # phases meet at a knot; a jump only where torch jumps
            knots.append(start)
            vals.append(a)
            if end <= last:
                knots.append(end)
                vals.append(b)
                fns.append(fn)
            else:  # the fit ends inside this phase: keep the part of it up to the last step
                q = (last - start) / (end - start)
                knots.append(last)
                vals.append(fn(a, b, q))
                fns.append(_Partial(fn, a, b, q))
        start = end
        if start >= last:
            break
    knots, vals, fns = _drop_repeats(knots, vals, fns)
    return Schedule._with_jumps(knots, vals, fns, "step", owner=call)


def _drop_repeats(knots: list[float], vals: list[float], fns: list) -> tuple[list[float], list[float], list]:
    """Merge a knot repeated with the same value (two phases meeting continuously) into one."""
    out_k, out_v, out_f = knots[:1], vals[:1], []
    for k, v, f in zip(knots[1:], vals[1:], fns):
        if k == out_k[-1] and v == out_v[-1]:
            continue
        out_k.append(k)
        out_v.append(v)
        out_f.append(f)
    return out_k, out_v, out_f


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
    Equal to torch at every size: with 1 to 3 steps torch's warmup ends before step 0 and the cycle starts on
    its way down (``onecycle_torch(3, 1.0)``: 0.99442, 0.46264, 4e-06).

    Args:
        total_steps: a whole number >= 1.
        max_lr: a finite number > 0.
        div_factor: a finite number > 0.
        final_div_factor: a finite number > 0.
        pct_start: in [0, 1].

    Raises:
        ValueError: an argument out of range, or ``pct_start * total_steps == 1``, where torch divides by zero.
    """
    max_lr, div_factor, final_div_factor = (
        _args.real("onecycle_torch", n, v, low=0, low_open=True)
        for n, v in (("max_lr", max_lr), ("div_factor", div_factor), ("final_div_factor", final_div_factor))
    )
    initial = max_lr / div_factor
    final = initial / final_div_factor
    values = [initial, max_lr, initial, final] if three_phase is True else [initial, max_lr, final]
    return _torch_cycle("onecycle_torch", total_steps, pct_start, three_phase, anneal, values)


def onecycle_torch_momentum(
    total_steps: int,
    *,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    """OneCycleLR's momentum cycling: ``max_momentum`` down to ``base_momentum`` while the lr rises, then back.

    Same phases as :func:`onecycle_torch` (same sizes accepted and refused); momenta are finite numbers.
    """
    base = _args.real("onecycle_torch_momentum", "base_momentum", base_momentum)
    top = _args.real("onecycle_torch_momentum", "max_momentum", max_momentum)
    values = [top, base, top, top] if three_phase is True else [top, base, top]
    return _torch_cycle("onecycle_torch_momentum", total_steps, pct_start, three_phase, anneal, values)
