"""The Scheduler callback: the one place where schedules touch learner state.

It puts together pure pieces, each in its own module and tested on its own:

- :mod:`~loopkit.scheduling.clock`: where training time stands on a schedule's axis (steps or epochs), per step
  or per epoch, and how the fit maps onto the schedule (``on_mismatch``: ``"error"``, ``"stretch"``,
  ``"hold"``; on resume too). A schedule that ends after the fit, or a resumed fit of another length than the
  checkpointed one, is an error by default, never silent drift; one that ends *before* the fit (a warmup, say)
  holds its last value, which is what such a schedule means. See ``docs/schedules.md``.
- :mod:`~loopkit.scheduling.domain`: the values each target can take. At the start of a fit the whole range a
  built-in schedule takes over the fit is checked, on the value actually written to each target (after a param
  group's ratio, after an integer target's rounding); a custom schedule is checked block by block.
- :mod:`~loopkit.scheduling.tracks`: values evaluated :data:`~loopkit.scheduling.tracks.BLOCK` steps at a time
  and the apply loop, so a step costs a list lookup and one ``set`` per hyperparameter whatever the epoch's
  length (``benchmarks/bench_scheduler.py``).
- :mod:`~loopkit.scheduling.hyperparams`: what each value touches and how it is set.

Every applied value is recorded in :attr:`Scheduler.history`; :meth:`Scheduler.simulate` gives the values a fit
would apply without a model. Loggers log what the optimizer holds, not this history
(``ReduceLROnPlateau`` moves the rate too).

Example:
    >>> import torch
    >>> from loopkit import Learner
    >>> from loopkit.scheduling.optimizer_hyperparams import LearningRate
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

from collections.abc import Mapping
from typing import Any

from ..loop.callback import Callback
from . import clock
from .domain import check_written, range_points
from .hyperparams import HyperParameter
from .optimizer_hyperparams import OptimizerHyperParameter
from .tracks import Track, apply


class Scheduler(Callback):
    """Move hyperparameters along schedules.

    Args:
        schedules: a mapping from a :class:`~loopkit.scheduling.hyperparams.HyperParameter` (a class, instantiated with
            no arguments, or an instance such as ``LearningRate(group=1)``) to a schedule
            (:class:`loopkit.schedules.Schedule` or anything with the same ``bind`` method).
        per: ``"step"`` (default; ``"batch"`` is the same) sets values before every train batch; ``"epoch"`` once per epoch, at
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
        per = {"batch": "step"}.get(per, per) if isinstance(per, str) else per  # Finetuner's word for a step
        if per not in ("step", "epoch"):
            raise ValueError(f"Scheduler(per={per!r}): use 'step' (or 'batch', the same) or 'epoch'")
        if on_mismatch not in clock.POLICIES:
            raise ValueError(f"Scheduler(on_mismatch={on_mismatch!r}): use one of {clock.POLICIES}")
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
        self._tracks: list[Track] = []

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
        self._maps = self._fresh_maps(self._bound, self._geometry)
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
            self._tracks = self._plan(learner, self._bound, self._maps, self.history.values())
            apply(self._tracks, learner, 0, 0, learner.epoch)

    def before_train(self, learner: Any) -> None:
        if self.per == "step":
            self._step0 = learner.global_step
            self._tracks = self._plan(learner, self._bound, self._maps, self.history.values())

    def before_batch(self, learner: Any) -> None:
        # Once per optimizer step, before its window's first micro-batch (micro_batch is 0 without accumulation).
        if self.per == "epoch" or learner.phase != "train" or learner.micro_batch:
            return
        step = learner.global_step
        apply(self._tracks, learner, learner.batch_idx, step - self._step0, step)

    def after_train(self, learner: Any) -> None:
        if self.per == "step":  # drop a value applied for a step that never happened (the phase's last, skipped)
            for history in self.history.values():
                del history[learner.global_step :]

    # ------------------------------------------------------------------------------------- simulating
    def simulate(
        self,
        n_steps: int | None = None,
        *,
        n_epochs: int | None = None,
        n_batches: int | None = None,
        micro_batches_per_step: int = 1,
    ) -> dict[str, list[float]]:
        """The values this Scheduler would apply in ``fit(n_epochs, max_steps=n_steps)`` over training data of
        ``n_batches`` batches an epoch, without a model or an optimizer (Ignite's ``simulate_values``).

        The same clock and the same evaluation as a fit, so the result equals :attr:`history` after that fit
        (one value per optimizer step for ``per="step"``, per epoch for ``per="epoch"``) when no step is
        skipped. Nothing is written and the Scheduler's own state is not touched. Domain checks need the
        optimizer's groups and run when the fit starts, not here; an integer :class:`~loopkit.scheduling.hyperparams.Attribute`
        is rounded only once a fit has bound it.

        Args:
            n_steps: optimizer steps to simulate (``max_steps``); None: the whole fit of ``n_epochs``.
            n_epochs: the fit's epochs; None: as many as ``n_steps`` take.
            n_batches: batches an epoch (``len(train_data)``); None: data without a length.
            micro_batches_per_step: batches per optimizer step (gradient accumulation's ``k``).

        Returns:
            ``{hyperparameter name: [value, ...]}``, as :attr:`history` holds them.

        Raises:
            ValueError: an argument that is not a whole number >= 1 (or None), an endless fit (neither
                ``n_steps`` nor ``n_epochs`` with ``n_batches``), or what the fit would refuse at its start (a
                schedule that ends after the fit under ``on_mismatch="error"``, an epoch-timed schedule
                without ``n_batches``).

        Example:
            >>> from loopkit import LearningRate
            >>> from loopkit.schedules import Schedule
            >>> Scheduler({LearningRate: Schedule([0, 2], [1.0, 0.0])}).simulate(n_epochs=2, n_batches=4)["lr"]
            [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
        """
        for what, value in (("n_steps", n_steps), ("n_epochs", n_epochs), ("n_batches", n_batches)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"Scheduler.simulate({what}={value!r}): give a whole number >= 1, or None")
        k = micro_batches_per_step
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Scheduler.simulate(micro_batches_per_step={k!r}): give a whole number >= 1")
        if n_steps is None and (n_epochs is None or n_batches is None):
            raise ValueError(
                f"Scheduler.simulate(n_steps=None, n_epochs={n_epochs!r}, n_batches={n_batches!r}) would never end; "
                "give n_steps, or n_epochs and n_batches"
            )
        geometry = clock.geometry(n_epochs, n_steps, n_batches, k)
        bounds = [self._bind(schedule, *geometry) for _, schedule in self.entries]
        maps = self._fresh_maps(bounds, geometry)
        history: dict[str, list[float]] = {hp.name: [] for hp, _ in self.entries}
        fit = _Clock(n_batches)
        while (n_epochs is None or fit.epoch < n_epochs) and (n_steps is None or fit.global_step < n_steps):
            tracks = self._plan(fit, bounds, maps, history.values(), simulated=True)
            steps = range(0, n_batches or 1 << 62, k)  # the batch that opens each optimizer step's window
            if self.per == "epoch":
                apply(tracks, fit, 0, 0, fit.epoch)
                fit.global_step += len(steps) if n_steps is None else min(len(steps), n_steps - fit.global_step)
            else:
                step0 = fit.global_step
                for b in steps:
                    if n_steps is not None and fit.global_step >= n_steps:
                        break
                    apply(tracks, fit, b, fit.global_step - step0, fit.global_step)
                    fit.global_step += 1
            fit.epoch += 1
        return history

    # ------------------------------------------------------------------------------------- evaluation
    def _bind(self, schedule: Any, n_epochs: int, n_batches: int | None) -> Any:
        bound = schedule.bind(steps_per_epoch=n_batches, n_epochs=n_epochs)
        if bound.axis == "epoch" and n_batches is None:
            raise ValueError(
                f"{schedule!r} is timed in epochs, but the training data has no length, so the position "
                "within an epoch is unknown; express the schedule's knots in steps (unit='step')"
            )
        return bound

    def _fresh_maps(self, bounds: list[Any], geometry: clock.Geometry) -> list[tuple[float, float]]:
        return [clock.horizon_map(hp.name, b, geometry, self.on_mismatch) for (hp, _), b in zip(self.entries, bounds)]

    def _plan(self, fit: Any, bounds: list[Any], maps: list, histories: Any, simulated: bool = False) -> list[Track]:
        """One :class:`Track` per hyperparameter for the phase that starts now (at ``self._step0``, or at
        ``fit.global_step`` when simulated)."""
        step0 = fit.global_step if simulated else self._step0
        tracks = []
        for (hp, schedule), bound, (offset, scale), history in zip(self.entries, bounds, maps, histories):
            by_step = bound.axis == "step"
            origin, divisor, limit = clock.phase_timeline(self.per, by_step, step0, fit.epoch, fit.n_batches)
            timeline = (offset, scale, origin, divisor, limit)
            tracks.append(Track(hp, schedule, bound, timeline, by_step, history, simulated))
        return tracks

    def _check_ranges(self, here: float | None) -> None:
        """Refuse, before training, a built-in schedule whose values over the rest of the fit leave a domain.

        ``here``: the fit time the rest starts at, on each schedule's own axis (None: the resume position).
        """
        n_batches = self._learner.n_batches  # the epoch axis counts batches: e + b / n_batches
        for (hp, schedule), bound, (offset, scale) in zip(self.entries, self._bound, self._maps):
            by_step = bound.axis == "step"
            last = clock.last_application(self.per, by_step, self._geometry, n_batches)
            start = here if here is not None else self._here(by_step)
            points = range_points(bound, offset + start * scale, None if last is None else offset + last * scale)
            if points is None:  # a custom annealing or schedule type: checked block by block instead
                continue
            times, values = points
            values = hp.applied(values)
            check_written(hp, schedule, values, times, bound.axis)
            hp.expect_range(float(values.min()), float(values.max()))

    def _here(self, by_step: bool) -> float:
        learner = self._learner
        epoch, batch = learner.position
        return clock.position(by_step, learner.global_step, epoch, batch, learner.n_batches)

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
            raise ValueError(clock.mismatch_message(now, saved))

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
                raise ValueError(clock.mismatch_message(now, saved))
            if self.on_mismatch == "stretch":
                self._maps = [
                    clock.stretched_map(bound, m, saved, now, self._here(bound.axis == "step"))
                    for bound, m in zip(self._bound, self._maps)
                ]
            self._geometry = now
        if learner.position is not None:
            self._check_ranges(None)
        self._tracks = self._plan(learner, self._bound, self._maps, self.history.values())
        # The values in force at the checkpoint, where no other state holds them (a batch size the loader draws
        # its next batch with before the next before_batch, a dropout rate, a loss margin). The optimizer's come
        # back exactly with its state: written again they could change in the last bit (value * ratio).
        for track in self._tracks:
            if track.history and not isinstance(track.hp, OptimizerHyperParameter):
                track.set(learner, track.history[-1])


def _geometry(learner: Any) -> clock.Geometry:
    """:func:`clock.geometry` of the learner's fit."""
    return clock.geometry(learner.n_epochs, learner.max_steps, learner.n_batches, learner.micro_batches_per_step)


class _Clock:
    """The loop state :meth:`Scheduler.simulate` stands in for the Learner's: where the simulated fit is."""

    def __init__(self, n_batches: int | None) -> None:
        self.n_batches, self.epoch, self.global_step = n_batches, 0, 0
