"""The Scheduler's clock: where training time stands, on a schedule's own axis, and how a fit maps onto it.

Pure functions of numbers (no learner, no optimizer), so each rule can be tested on its own.

- Two axes. A schedule whose knots are all in steps is read at ``global_step`` (optimizer steps, from 0); any
  other at the epoch position ``epoch + batch / n_batches`` (:func:`position`).
- Two rates (``per``). ``"step"``: a value before every optimizer step, at the batch that opens its window;
  ``"epoch"``: one value per epoch, the per-step curve sampled at the epoch's first batch (:func:`phase_timeline`).
- Three horizon policies (``on_mismatch``) for a schedule that ends after the fit, or a resumed fit of another
  length than the checkpoint's: ``"error"``, ``"stretch"`` (lay the schedule's whole length over the fit's; on
  resume, the rest of the schedule over the rest of the fit, continuous at the resume point) or ``"hold"``
  (keep the schedule's timing, hold its last value). A map ``(offset, scale)`` turns fit time ``t`` into
  schedule time ``offset + t * scale`` (:func:`horizon_map`, :func:`stretched_map`).

Example: a 100-step schedule over a 50-step fit, stretched.
    >>> class Bound: axis, horizon = "step", 100.0
    >>> horizon_map("lr", Bound(), (5, 10), "stretch")   # 5 epochs of 10 steps: schedule time = 2 * step
    (0.0, 2.0)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

POLICIES = ("error", "stretch", "hold")

#: (epochs, optimizer steps an epoch) over which schedules are laid out; either may be None (unknown).
Geometry = tuple[Any, "int | None"]


def geometry(
    n_epochs: int | None, max_steps: int | None, n_batches: int | None, micro_batches_per_step: int
) -> Geometry:
    """(epochs, optimizer steps per epoch) over which schedules are laid out.

    Steps per epoch count optimizer steps: ``ceil(n_batches / micro_batches_per_step)`` under gradient
    accumulation, so ``steps(100)`` is 100 optimizer steps. The epochs are ``n_epochs``, or, for
    ``fit(max_steps=N)`` without an epoch count, the epochs that N steps take (a fraction of the fit is then a
    fraction of the N steps).

    Example:
        >>> geometry(None, 25, 10, 1), geometry(3, None, 10, 4)
        ((2.5, 10), (3, 3))
    """
    per_epoch = None if n_batches is None else -(-n_batches // micro_batches_per_step)
    if n_epochs is not None or max_steps is None or not per_epoch:
        return n_epochs, per_epoch
    return max_steps / per_epoch, per_epoch


def fit_end(axis: str, geometry: Geometry) -> float | None:
    """Where the fit ends on ``axis`` (``"epoch"``: epochs; ``"step"``: steps; None: unknown)."""
    n_epochs, per_epoch = geometry
    if axis == "epoch":
        return float(n_epochs)
    return None if per_epoch is None else float(n_epochs * per_epoch)


def position(by_step: bool, global_step: int, epoch: int, batch: int, n_batches: int | None) -> float:
    """Fit time on one axis: ``global_step`` on the step axis, ``epoch + batch / n_batches`` on the epoch axis."""
    return float(global_step) if by_step else epoch + batch / n_batches  # type: ignore[operator]


def horizon_map(name: str, bound: Any, geometry: Geometry, on_mismatch: str) -> tuple[float, float]:
    """``(offset, scale)`` for a fresh fit: schedule time = offset + fit time * scale.

    Raises:
        ValueError: ``"stretch"`` over a fit of unknown length; ``"error"`` and a schedule that ends after the fit.
    """
    end = fit_end(bound.axis, geometry)
    if on_mismatch == "stretch":
        if end is None:
            raise ValueError(
                f"Scheduler(on_mismatch='stretch') lays the schedule for {name} over the fit, whose length "
                "in steps is unknown: the training data has no length; give the data a length or use "
                "on_mismatch='hold'"
            )
        # Compress a longer schedule and extend a shorter one: its whole length maps onto the fit's.
        # A schedule with no end (torch's endless decays: horizon inf) keeps its own timing.
        return (0.0, bound.horizon / end) if 0 < bound.horizon < float("inf") else (0.0, 1.0)
    # open_from: the fit may cut the schedule from there on (restarts' last cycle, torch's endless decays).
    if end is None or bound.horizon <= end or getattr(bound, "open_from", bound.horizon) <= end:
        return (0.0, 1.0)
    if on_mismatch == "error":
        raise ValueError(
            f"the schedule for {name} ends at {bound.horizon:g} {bound.axis}s but the fit ends at "
            f"{end:g}; shorten the schedule, fit longer, or pass Scheduler(on_mismatch='stretch') to "
            "compress it onto the fit or on_mismatch='hold' to cut it off"
        )
    return (0.0, 1.0)


def stretched_map(
    bound: Any, old_map: tuple[float, float], saved: Geometry, now: Geometry, here: float
) -> tuple[float, float]:
    """The map of a resumed fit whose geometry changed from ``saved`` to ``now`` at fit time ``here``: the
    schedule time reached so far is kept and the rest of the schedule is laid over the rest of the fit.

    Raises:
        ValueError: a fit of unknown length, or one that ends before ``here``.
    """
    old_end, new_end = fit_end(bound.axis, saved), fit_end(bound.axis, now)
    if old_end is None or new_end is None:
        raise ValueError("on_mismatch='stretch' needs training data with a length")
    if new_end <= here:
        raise ValueError(f"cannot stretch the schedule: the resumed fit ends at {new_end:g}, before now ({here:g})")
    offset, scale = old_map
    s_here = offset + here * scale
    s_end = offset + old_end * scale
    new_scale = (s_end - s_here) / (new_end - here)
    return (s_here - here * new_scale, new_scale)


def mismatch_message(now: Geometry, saved: Geometry) -> str:
    """The error for a resumed fit of another length than the checkpoint's under ``on_mismatch="error"``."""
    return (
        f"this fit has (n_epochs, n_batches)={now} but the checkpoint's schedule was laid out for "
        f"{saved}; fit with the same length, or pass Scheduler(on_mismatch='stretch') to map the "
        "rest of the schedule onto the rest of the fit, or on_mismatch='hold' to keep its timing"
    )


def phase_timeline(
    per: str, by_step: bool, step0: int, epoch: int, n_batches: int | None
) -> tuple[float, int, int | None]:
    """``(origin, divisor, limit)`` of a phase: its index ``i`` (a step since the phase began on the step axis,
    a batch on the epoch axis) is at fit time ``origin + i / divisor``; ``limit`` is the phase's length in
    indices when known (one value for ``per="epoch"``)."""
    if per == "epoch":  # one value, at the epoch's first batch
        return (step0 if by_step else epoch), 1, 1
    # An epoch-axis schedule has a length here (the Scheduler refuses it over data without one).
    return (step0, 1, n_batches) if by_step else (epoch, n_batches or 1, n_batches)


def schedule_times(index: np.ndarray, origin: float, divisor: int, offset: float, scale: float) -> np.ndarray:
    """Schedule times of phase indices (float64 in and out): ``offset + (origin + index / divisor) * scale``,
    the arithmetic of :func:`~loopkit.schedules.epoch_position`, element by element."""
    t = origin + index if divisor == 1 else origin + index / divisor
    if (offset, scale) != (0.0, 1.0):
        t = offset + t * scale
    return t


def last_application(per: str, by_step: bool, geometry: Geometry, n_batches: int | None) -> float | None:
    """Fit time of the fit's last application on one axis (or a bound on it); None: unbounded."""
    n_epochs, per_epoch = geometry
    if n_epochs is None:
        return None
    if per == "epoch":
        epochs_started = math.ceil(n_epochs) - 1
        if by_step:
            return None if per_epoch is None else epochs_started * per_epoch
        return epochs_started
    if by_step:
        return None if per_epoch is None else n_epochs * per_epoch - 1
    return n_epochs - 1 / n_batches  # type: ignore[operator]
