"""EarlyStopping: stop when a monitored metric stops improving; optionally restore the best weights."""

from __future__ import annotations

import math
from typing import Any

from .._validate import whole_number
from ..loop.callback import Callback
from ..loop.events import CancelFit
from ..resume.model import unwrap_model
from ._monitor import latest, monitored_metrics
from .validate_first import first_evaluation


class EarlyStopping(Callback):
    """Stop the fit after ``patience`` epochs without improvement of ``monitor``.

    Args:
        monitor: a :class:`~loopkit.callbacks.metrics.Metrics` key, e.g. ``"valid_loss"``.
        mode: ``"min"`` or ``"max"``.
        patience: stop after this many consecutive epochs without improvement (Keras's convention).
        min_delta: how much better than the best so far a value must be to count as an improvement.
        restore_best: at the end of the fit, load the weights of the best epoch (kept as a CPU copy).
        check_finite: stop at once, after the epoch whose monitored value is NaN or infinite (Lightning's
            ``check_finite``); by default such a value is simply not an improvement and counts toward ``patience``.

    Attributes:
        best, best_epoch, stopped_epoch: what happened, for inspection after ``fit``. With
            :class:`~loopkit.callbacks.validate_first.ValidateFirst` the untrained model's value is the first best
            (``best_epoch`` -1, Keras's ``baseline``): patience counts the epochs that do not beat it.
        reason: why the fit was stopped: ``"patience"``, ``"non-finite"``, or ``None`` if it was not.

    Raises:
        ValueError: at construction, an unknown ``mode``, a ``patience`` that is not a whole number >= 0, or a
            negative ``min_delta``; when the Learner is built, and again at the start of each fit, no
            ``Metrics`` callback, a ``monitor`` that Metrics never produces (the message lists the names it
            does, closest first), or a ``valid_*`` monitor without ``valid_data``.
    """

    reads = ("epoch", "callbacks", "metrics")
    writes = ("model.parameters",)
    run_after = ("Metrics",)

    def __init__(
        self,
        monitor: str = "valid_loss",
        *,
        mode: str = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = False,
        check_finite: bool = False,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"EarlyStopping(monitor={monitor!r}): name a Metrics key such as 'valid_loss'")
        for flag, value in (("restore_best", restore_best), ("check_finite", check_finite)):
            if not isinstance(value, bool):
                raise TypeError(f"EarlyStopping({flag}={value!r}): pass True or False")
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping(mode={mode!r}): use 'min' or 'max'")
        whole_number("EarlyStopping", "patience", patience, 0)
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"EarlyStopping(min_delta={min_delta!r}) needs a number >= 0")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, float(min_delta)
        self.restore_best, self.check_finite = restore_best, check_finite
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.reason: str | None = None
        self.wait = 0
        self._best_state: dict[str, Any] | None = None

    def check(self, learner: Any) -> None:
        monitored_metrics(learner, self.monitor, "EarlyStopping")

    def before_fit(self, learner: Any) -> None:
        # Again: valid_data or the metrics may have changed since the Learner was built.
        monitored_metrics(learner, self.monitor, "EarlyStopping")
        self._reset()

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def before_epoch(self, learner: Any) -> None:
        first = first_evaluation(learner)  # ValidateFirst's evaluation of the untrained model: the baseline
        if first is not None and self.monitor in first and self._improved(first[self.monitor]):
            self._keep(learner, first[self.monitor], int(first["epoch"]))

    def _keep(self, learner: Any, value: float, epoch: int) -> None:
        self.best, self.best_epoch, self.wait = value, epoch, 0
        if self.restore_best:
            # The underlying module's state (not a DDP or compile wrapper's), as a checkpoint holds it.
            state = unwrap_model(learner.model).state_dict()
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def after_epoch(self, learner: Any) -> None:
        value = latest(learner, self.monitor)
        if self.check_finite and not math.isfinite(value):
            self.stopped_epoch, self.reason = learner.epoch, "non-finite"
            raise CancelFit
        if self._improved(value):
            self._keep(learner, value, learner.epoch)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch, self.reason = learner.epoch, "patience"
            raise CancelFit

    def after_fit(self, learner: Any) -> None:
        if self.restore_best and self._best_state is not None and learner.error is None:
            unwrap_model(learner.model).load_state_dict(self._best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_state": self._best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self._best_state = state["best_state"]
