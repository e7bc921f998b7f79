"""The Scheduler callback: the one place where schedules touch learner state.

The Scheduler evaluates each schedule a block of steps at a time (one vectorised call per :data:`BLOCK` steps
per schedule), so a step costs a list lookup and one ``set`` per hyperparameter, and neither its memory before
the first step nor its cost per step depends on the epoch's length (a 10^7-batch epoch costs what a
10^3-batch one does; ``benchmarks/bench_scheduler.py``). Every applied value is appended to
:attr:`Scheduler.history`, which loggers read instead of recomputing.

The clock: the value at batch ``b`` of epoch ``e`` is the schedule's value at step ``global_step`` (for
schedules whose knots are all in steps) or at epoch position ``e + b / n_batches`` (otherwise); see
``docs/schedules.md``.

Domains: each hyperparameter declares the values its target can take
(:class:`~loopkit.scheduling.hyperparams.Domain`). At the start of a fit the whole range a built-in schedule
takes over the fit is checked against it, on the value actually written to each target (after a param group's
ratio, after an integer target's rounding); a schedule with a custom annealing function or of a custom type
is checked block by block, before any of the block's values is written.

Horizon policy (``on_mismatch``): a schedule that ends after the fit does, or a resumed fit of a different
length than the checkpointed one, is an error by default, never silent drift. ``"stretch"`` lays every
schedule's whole length over the fit's (compressing a longer one, extending a shorter one) and, on resume,
maps the rest of the schedule onto the rest of the fit (continuous at the resume point); ``"hold"`` keeps the
schedule's own timing and holds its last value past its end. Under the default, a schedule that ends *before*
the fit (a warmup, say) holds its last value; that is what such a schedule means.

Example:
    >>> import torch
    >>> from loopkit import Learner
    >>> from loopkit.scheduling.hyperparams import LearningRate
    >>> from loopkit.schedules import Schedule
    >>> model = torch.nn.Linear(2, 1)
    >>> data = [(torch.randn(4, 2), torch.randn(4, 1))] * 4
    >>> sched = Scheduler({LearningRate: Schedule([0, 2], [1.0, 0.0])})   # linear, knots in epochs
    >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=1.0),
    ...                   torch.nn.functional.mse_loss, callbacks=[sched])
    >>> _ = learner.fit(2)
    >>> sched.history["lr"]
    [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..loop.callback import Callback, UndeclaredWriteError
from ..schedules.anneal import ANNEALS
from ..schedules.schedule import BoundSchedule
from .hyperparams import HyperParameter, OptimizerHyperParameter

_POLICIES = ("error", "stretch", "hold")
BLOCK = 1024  # steps evaluated per vectorised call: large enough to amortise numpy's call cost (~10 us)
_KNOWN_ANNEALS = tuple(ANNEALS.values())


class Scheduler(Callback):
    """Move hyperparameters along schedules.

    Args:
        schedules: a mapping from a :class:`~loopkit.scheduling.hyperparams.HyperParameter` (a class, instantiated with
            no arguments, or an instance such as ``LearningRate(group=1)``) to a schedule
            (:class:`loopkit.schedules.Schedule` or anything with the same ``bind`` method).
        per: ``"step"`` (default) sets values before every train batch; ``"epoch"`` once per epoch, at
            ``before_epoch`` (before the Learner reads the epoch's length, so a batch size takes effect in that
            epoch): the per-step curve sampled at the epoch's first batch.
        on_mismatch: ``"error"`` (default), ``"stretch"`` or ``"hold"``; see the module docstring.
        name: the callback's name, to tell two Schedulers apart in checkpoints and ``describe()``.

    Attributes:
        history: every value applied, by hyperparameter name: per step (``per="step"``, entry ``i`` applied
            before optimizer step ``i``) or per epoch (``per="epoch"``).

    Raises:
        TypeError: at construction, ``schedules`` that is not a non-empty mapping, a key that is not a
            :class:`~loopkit.scheduling.hyperparams.HyperParameter` or whose class does not implement ``set`` or
            declares no ``writes``, a value without a ``bind`` method.
        ValueError: at construction, an unknown ``per``/``on_mismatch``, an empty ``name``, or two schedules
            for one hyperparameter; when the Learner is built, a hyperparameter the optimizer cannot hold (a
            ``group`` index past its param groups, a param group without the key); when the fit starts, a
            schedule that ends after the fit (with ``on_mismatch="error"``), an epoch-timed schedule over data
            without a length, ``on_mismatch="stretch"`` over data without a length, a value outside a target's
            domain, or a resumed fit of another length than the checkpoint's.
    """

    agrees_across_ranks = True  # its values follow global_step, which every rank shares

    # train_data: the epoch length (n_batches) derives from it, so a batch-size writer must run first.
    reads: tuple[str, ...] = (
        "epoch",
        "batch_idx",
        "global_step",
        "n_batches",
        "n_epochs",
        "max_steps",
        "micro_batch",
        "micro_batches_per_step",
        "phase",
        "train_data",
    )

    def __init__(
        self, schedules: Mapping[Any, Any], *, per: str = "step", on_mismatch: str = "error", name: str | None = None
    ) -> None:
        if not isinstance(schedules, Mapping) or not schedules:
            raise TypeError(
                f"Scheduler needs a non-empty mapping from HyperParameter to schedule, got {schedules!r}; "
                "e.g. Scheduler({LearningRate: onecycle(10, 0.1)})"
            )
        if per not in ("step", "epoch"):
            raise ValueError(f"Scheduler(per={per!r}): use 'step' or 'epoch'")
        if on_mismatch not in _POLICIES:
            raise ValueError(f"Scheduler(on_mismatch={on_mismatch!r}): use one of {_POLICIES}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"Scheduler(name={name!r}): give a non-empty string, or leave it out")
        self.name = name
        self.per = per
        self.on_mismatch = on_mismatch
        self.entries: list[tuple[HyperParameter, Any]] = []
        for key, schedule in schedules.items():
            hp = key() if isinstance(key, type) and issubclass(key, HyperParameter) else key
            if not isinstance(hp, HyperParameter):
                raise TypeError(
                    f"Scheduler key {key!r} is not a HyperParameter; use LearningRate, Momentum, WeightDecay, "
                    "Attribute('path.to.value') or a subclass of loopkit.scheduling.hyperparams.HyperParameter"
                )
            kind = type(hp).__name__
            if type(hp).set is HyperParameter.set:
                raise TypeError(
                    f"{kind} does not implement set(self, learner, value), so the Scheduler could never apply "
                    f"it; define {kind}.set"
                )
            if not hp.writes:
                raise TypeError(
                    f"{kind} declares no writes; name what its set changes (e.g. writes = ('loss_fn.margin',)) "
                    "so that callback ordering and clash detection see it"
                )
            if not callable(getattr(schedule, "bind", None)):
                raise TypeError(f"Scheduler value for {hp.name} must be a Schedule, got {schedule!r}")
            if any(other.name == hp.name for other, _ in self.entries):
                raise ValueError(f"Scheduler got two schedules for {hp.name}; give each hyperparameter one")
            self.entries.append((hp, schedule))
        self.writes = tuple(dict.fromkeys(w for hp, _ in self.entries for w in hp.writes))
        self.reads = tuple(dict.fromkeys(self.reads + tuple(r for hp, _ in self.entries for r in hp.reads)))
        self.history: dict[str, list[float]] = {hp.name: [] for hp, _ in self.entries}
        self._tracks: list[_Track] = []

    def __repr__(self) -> str:
        inner = ", ".join(f"{hp!r}: {s!r}" for hp, s in self.entries)
        return f"Scheduler({{{inner}}}, per={self.per!r})"

    # ------------------------------------------------------------------------------------- lifecycle
    def check(self, learner: Any) -> None:
        for hp, _ in self.entries:
            hp.check(learner)

    def before_fit(self, learner: Any) -> None:
        self._learner = learner
        self._geometry = _geometry(learner)
        self._bound = [self._bind(schedule, *self._geometry) for _, schedule in self.entries]
        self._maps = [self._fresh_map(hp, bound) for (hp, _), bound in zip(self.entries, self._bound)]
        for hp, _ in self.entries:
            hp.bind(learner)
        for values in self.history.values():
            values.clear()
        self._step0 = 0
        self._check_ranges(0.0)
        self._tracks = []

    def before_epoch(self, learner: Any) -> None:
        # Per-epoch values are set before the Learner reads the epoch's length, so a batch size takes effect
        # in the very epoch it is scheduled for.
        if self.per == "epoch":
            self._step0 = learner.global_step
            self._build_plan(learner)
            self._apply(learner, 0, 0)

    def before_train(self, learner: Any) -> None:
        if self.per == "step":
            self._step0 = learner.global_step
            self._build_plan(learner)

    def before_batch(self, learner: Any) -> None:
        # Once per optimizer step, before its window's first micro-batch (micro_batch is 0 without accumulation).
        if self.per == "epoch" or learner.phase != "train" or learner.micro_batch:
            return
        # The hot path: _apply's loop, inlined to save a call per step.
        step = learner.global_step
        b, s = learner.batch_idx, step - self._step0
        track = None
        try:
            for track in self._tracks:
                i = s if track.by_step else b
                j = i - track.start
                value = track.block[j] if 0 <= j < track.size else track.refill(i)
                track.set(learner, value)
                # history[k] is the value step k used: a value applied for a step that was then skipped is replaced.
                track.history[step:] = (value,)
        except UndeclaredWriteError as error:
            raise _undeclared(track, error) from None

    def after_train(self, learner: Any) -> None:
        if self.per == "step":  # drop a value applied for a step that never happened (the phase's last, skipped)
            for history in self.history.values():
                del history[learner.global_step :]

    def _apply(self, learner: Any, b: int, s: int) -> None:
        """Set every hyperparameter to its value at batch ``b`` / step ``s`` of this phase, and record it."""
        track = None
        try:
            for track in self._tracks:
                i = s if track.by_step else b
                j = i - track.start
                value = track.block[j] if 0 <= j < track.size else track.refill(i)
                track.set(learner, value)
                track.history.append(value)
        except UndeclaredWriteError as error:
            raise _undeclared(track, error) from None

    # ------------------------------------------------------------------------------------- evaluation
    def _bind(self, schedule: Any, n_epochs: int, n_batches: int | None) -> Any:
        bound = schedule.bind(steps_per_epoch=n_batches, n_epochs=n_epochs)
        if bound.axis == "epoch" and n_batches is None:
            raise ValueError(
                f"{schedule!r} is timed in epochs, but the training data has no length, so the position "
                "within an epoch is unknown; express the schedule's knots in steps (unit='step')"
            )
        return bound

    def _fit_end(self, bound: Any, n_epochs: int, n_batches: int | None) -> float | None:
        if bound.axis == "epoch":
            return float(n_epochs)
        return None if n_batches is None else float(n_epochs * n_batches)

    def _fresh_map(self, hp: HyperParameter, bound: Any) -> tuple[float, float]:
        """(offset, scale): schedule time = offset + fit time * scale."""
        end = self._fit_end(bound, *self._geometry)
        if self.on_mismatch == "stretch":
            if end is None:
                raise ValueError(
                    f"Scheduler(on_mismatch='stretch') lays the schedule for {hp.name} over the fit, whose length "
                    "in steps is unknown: the training data has no length; give the data a length or use "
                    "on_mismatch='hold'"
                )
            # Compress a longer schedule and extend a shorter one: its whole length maps onto the fit's.
            # A schedule with no end (torch's endless decays: horizon inf) keeps its own timing.
            return (0.0, bound.horizon / end) if 0 < bound.horizon < float("inf") else (0.0, 1.0)
        # open_from: the fit may cut the schedule from there on (restarts' last cycle, torch's endless decays).
        if end is None or bound.horizon <= end or getattr(bound, "open_from", bound.horizon) <= end:
            return (0.0, 1.0)
        if self.on_mismatch == "error":
            raise ValueError(
                f"the schedule for {hp.name} ends at {bound.horizon:g} {bound.axis}s but the fit ends at "
                f"{end:g}; shorten the schedule, fit longer, or pass Scheduler(on_mismatch='stretch') to "
                "compress it onto the fit or on_mismatch='hold' to cut it off"
            )
        return (0.0, 1.0)

    def _build_plan(self, learner: Any) -> None:
        n = learner.n_batches
        tracks = []
        for (hp, schedule), bound, (offset, scale), history in zip(
            self.entries, self._bound, self._maps, self.history.values()
        ):
            by_step = bound.axis == "step"
            if self.per == "epoch":  # one value, at the epoch's first batch
                origin, divisor, limit = (self._step0 if by_step else learner.epoch), 1, 1
            else:
                # An epoch-axis schedule has a length here (_bind refused it otherwise).
                origin, divisor, limit = (self._step0, 1, n) if by_step else (learner.epoch, n or 1, n)
            tracks.append(_Track(hp, schedule, bound, offset, scale, origin, divisor, limit, by_step, history))
        self._tracks = tracks

    def _check_ranges(self, here: float | None) -> None:
        """Refuse, before training, a built-in schedule whose values over the rest of the fit leave a domain.

        ``here``: the fit time the rest starts at, on each schedule's own axis (None: the resume position).
        """
        n_epochs, per_epoch = self._geometry  # per_epoch: optimizer steps an epoch
        n_batches = self._learner.n_batches  # the epoch axis counts batches: e + b / n_batches
        for (hp, schedule), bound, (offset, scale) in zip(self.entries, self._bound, self._maps):
            by_step = bound.axis == "step"
            # The time of the fit's last application (or a bound on it; None: unbounded).
            last: float | None
            if n_epochs is None:
                last = None
            elif self.per == "epoch":
                epochs_started = math.ceil(n_epochs) - 1
                last = (None if per_epoch is None else epochs_started * per_epoch) if by_step else epochs_started
            elif by_step:
                last = None if per_epoch is None else n_epochs * per_epoch - 1
            else:
                last = n_epochs - 1 / n_batches
            start = here if here is not None else self._here(by_step)
            points = _known_points(bound, offset + start * scale, None if last is None else offset + last * scale)
            if points is None:  # a custom annealing or schedule type: checked block by block instead
                continue
            times = np.array([t for t, _ in points], dtype=np.float64)
            values = hp.applied(np.array([v for _, v in points], dtype=np.float64))
            for target in hp.targets():
                bad = target.domain.outside(values * target.ratio if target.ratio != 1.0 else values)
                if bad.size:
                    k = bad[0]
                    raise _out_of_domain(hp, schedule, target, values[k], times[k], bound.axis)
            expect = getattr(hp, "expect_range", None)
            if callable(expect):
                expect(float(values.min()), float(values.max()))

    def _here(self, by_step: bool) -> float:
        learner = self._learner
        epoch, batch = learner.position
        return float(learner.global_step) if by_step else epoch + batch / learner.n_batches

    # ------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "geometry": self._geometry,
            "maps": list(self._maps),
            "step0": self._step0,
            "hyperparameters": [hp.state_dict() for hp, _ in self.entries],
        }

    def check_state_dict(self, state: dict[str, Any], learner: Any) -> None:
        """Raise ``ValueError`` if ``state`` cannot be resumed in ``learner``'s fit; the Learner calls this before
        it loads anything from a checkpoint, so a misfit leaves model and optimizer untouched."""
        if len(state["hyperparameters"]) != len(self.entries) or set(state["history"]) != set(self.history):
            raise ValueError(
                f"it schedules {sorted(state['history'])}, this Scheduler {sorted(self.history)}; resume with the "
                "same schedules"
            )
        saved, now = tuple(state["geometry"]), _geometry(learner)
        if saved != now and self.on_mismatch == "error":
            raise ValueError(self._mismatch_message(now, saved))

    def _mismatch_message(self, now: tuple, saved: tuple) -> str:
        return (
            f"this fit has (n_epochs, n_batches)={now} but the checkpoint's schedule was laid out for "
            f"{saved}; fit with the same length, or pass Scheduler(on_mismatch='stretch') to map the "
            "rest of the schedule onto the rest of the fit, or on_mismatch='hold' to keep its timing"
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        learner = self._learner
        for (hp, _), hp_state in zip(self.entries, state["hyperparameters"]):
            hp.load_state_dict(hp_state)
        for name, values in state["history"].items():
            self.history[name][:] = values
        self._step0 = state["step0"]
        saved, now = tuple(state["geometry"]), self._geometry
        self._geometry = saved
        self._bound = [self._bind(schedule, *saved) for _, schedule in self.entries]
        self._maps = [tuple(m) for m in state["maps"]]
        if saved != now:
            if self.on_mismatch == "error":
                raise ValueError(self._mismatch_message(now, saved))
            if self.on_mismatch == "stretch":
                self._maps = [
                    self._stretched(bound, m, saved, now, learner) for bound, m in zip(self._bound, self._maps)
                ]
            self._geometry = now
        if learner.position is not None:
            self._check_ranges(None)
        self._build_plan(learner)
        # The values in force at the checkpoint, where no other state holds them (a batch size the loader draws
        # its next batch with before the next before_batch, a dropout rate, a loss margin). The optimizer's come
        # back exactly with its state: written again they could change in the last bit (value * ratio).
        for track in self._tracks:
            if track.history and not isinstance(track.hp, OptimizerHyperParameter):
                track.set(learner, track.history[-1])

    def _stretched(self, bound: Any, old_map: tuple, saved: tuple, now: tuple, learner: Any) -> tuple[float, float]:
        old_end, new_end = self._fit_end(bound, *saved), self._fit_end(bound, *now)
        if old_end is None or new_end is None:
            raise ValueError("on_mismatch='stretch' needs training data with a length")
        epoch, batch = learner.position
        here = float(learner.global_step) if bound.axis == "step" else epoch + batch / learner.n_batches
        if new_end <= here:
            raise ValueError(f"cannot stretch the schedule: the resumed fit ends at {new_end:g}, before now ({here:g})")
        offset, scale = old_map
        # Continuous at `here`: the schedule time reached so far is kept; the rest is rescaled to fit.
        s_here = offset + here * scale
        s_end = offset + old_end * scale
        new_scale = (s_end - s_here) / (new_end - here)
        return (s_here - here * new_scale, new_scale)


def _geometry(learner: Any) -> tuple[Any, int | None]:
    """(epochs, optimizer steps per epoch) over which schedules are laid out.

    Steps per epoch count optimizer steps: ``ceil(n_batches / micro_batches_per_step)`` under gradient
    accumulation, so ``steps(100)`` is 100 optimizer steps. The epochs are ``n_epochs``, or, for
    ``fit(max_steps=N)`` without an epoch count, the epochs that N steps take (a fraction of the fit is then a
    fraction of the N steps).
    """
    n, k = learner.n_batches, learner.micro_batches_per_step
    per_epoch = None if n is None else -(-n // k)
    if learner.n_epochs is not None or learner.max_steps is None or not per_epoch:
        return learner.n_epochs, per_epoch
    return learner.max_steps / per_epoch, per_epoch


class _Track:
    """One hyperparameter's values in the current phase, evaluated :data:`BLOCK` steps at a time.

    Index ``i`` of the phase (a step since the phase began, or a batch) is at fit time ``origin + i / divisor``
    (``step0 + i`` on the step axis, ``epoch + i / n_batches`` on the epoch axis: the arithmetic of
    :func:`~loopkit.schedules.epoch_position`, element by element), and at schedule time ``offset + t * scale``.
    ``limit`` (the phase's length when known) caps a block so that a short epoch computes no more than it uses.
    """

    __slots__ = (
        "block",
        "bound",
        "by_step",
        "divisor",
        "history",
        "hp",
        "limit",
        "offset",
        "origin",
        "scale",
        "schedule",
        "set",
        "size",
        "start",
    )

    def __init__(
        self,
        hp: HyperParameter,
        schedule: Any,
        bound: Any,
        offset: float,
        scale: float,
        origin: float,
        divisor: int,
        limit: int | None,
        by_step: bool,
        history: list[float],
    ) -> None:
        self.hp, self.schedule, self.bound, self.offset, self.scale = hp, schedule, bound, offset, scale
        self.origin, self.divisor, self.limit, self.by_step, self.history = origin, divisor, limit, by_step, history
        self.set = hp.set
        self.block: list[float] = []
        self.start, self.size = 0, 0

    def refill(self, i: int) -> float:
        """Evaluate the block that starts at index ``i``, check it against the targets' domains, return its
        first value."""
        size = BLOCK if self.limit is None or i >= self.limit else min(BLOCK, self.limit - i)
        index = np.arange(i, i + size, dtype=np.float64)
        t = self.origin + index if self.divisor == 1 else self.origin + index / self.divisor
        if (self.offset, self.scale) != (0.0, 1.0):
            t = self.offset + t * self.scale
        values = self.hp.applied(np.asarray(self.bound.table(t), dtype=np.float64))
        for target in self.hp.targets():
            bad = target.domain.outside(values * target.ratio if target.ratio != 1.0 else values)
            if bad.size:
                k = bad[0]
                raise _out_of_domain(self.hp, self.schedule, target, values[k], t[k], self.bound.axis)
        self.block, self.start, self.size = values.tolist(), i, size
        return self.block[0]


def _known_points(bound: Any, t0: float, t1: float | None) -> list[tuple[float, float]] | None:
    """(time, value) pairs whose values bound every value a built-in schedule takes on [t0, t1] (t1=None: on
    [t0, ever)): the ends and every knot inside. Exact because each built-in annealing is monotone between its
    knots' values and PCHIP does not overshoot. None for a custom annealing or schedule type."""
    if not isinstance(bound, BoundSchedule) or not all(a in _KNOWN_ANNEALS for a in bound.anneals):
        return None
    points = [(t0, bound(t0))]
    points += [(k, v) for k, v in zip(bound.knots, bound.values) if k > t0 and (t1 is None or k < t1)]
    if t1 is None:
        points.append((max(bound.knots[-1], t0), bound.values[-1]))
    else:
        points.append((t1, bound(t1)))
    return points


def _out_of_domain(hp: HyperParameter, schedule: Any, target: Any, value: float, t: float, axis: str) -> ValueError:
    written = value * target.ratio
    via = "" if target.ratio == 1.0 else f" (the schedule's {value:g} times the group's ratio {target.ratio:g})"
    return ValueError(
        f"the schedule for {hp.name}, {schedule!r}, would write {written:g} to {target.where}{via} at {axis} "
        f"{t:g} of the schedule, outside its domain {target.domain}"
        + (f" ({target.domain.why})" if target.domain.why else "")
        + "; change the schedule's values so that they stay inside it"
    )


def _undeclared(track: _Track | None, error: UndeclaredWriteError) -> UndeclaredWriteError:
    if track is None:  # not raised by a hyperparameter's set
        return error
    kind = type(track.hp).__name__
    name = getattr(error, "name", None) or "the attribute"
    return UndeclaredWriteError(
        f"{kind}.set rebound learner.{name}, which {kind} does not declare; add {name!r} to {kind}.writes "
        "(a Scheduler's writes are derived from its hyperparameters' writes)",
        name=getattr(error, "name", None),
    )
