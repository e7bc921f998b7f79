"""EarlyStopping: stop when a monitored metric stops improving; optionally restore the best weights."""

from __future__ import annotations

import math
from typing import Any

from .._validate import whole_number
from ..loop.callback import Callback
from ..loop.events import CancelFit
from .metrics import Metrics


class EarlyStopping(Callback):
    """Stop the fit after ``patience`` epochs without improvement of ``monitor``.

    Args:
        monitor: a :class:`~loopkit.callbacks.metrics.Metrics` key, e.g. ``"valid_loss"``.
        mode: ``"min"`` or ``"max"``.
        patience: stop after this many consecutive epochs without improvement (Keras's convention).
        min_delta: how much better than the best so far a value must be to count as an improvement.
        restore_best: at the end of the fit, load the weights of the best epoch (kept as a CPU copy).

    Raises:
        ValueError: at construction, an unknown ``mode``, a ``patience`` that is not a whole number >= 0, or a
            negative ``min_delta``; when the Learner is built, no ``Metrics`` callback to read ``monitor`` from.

    Attributes:
        best, best_epoch, stopped_epoch: what happened, for inspection after ``fit``.
    """

    reads = ("epoch", "callbacks")
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
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping(mode={mode!r}): use 'min' or 'max'")
        whole_number("EarlyStopping", "patience", patience, 0)
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"EarlyStopping(min_delta={min_delta!r}) needs a number >= 0")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, float(min_delta)
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_state: dict[str, Any] | None = None

    def check(self, learner: Any) -> None:
        if not any(isinstance(cb, Metrics) for cb in learner.callbacks):
            raise ValueError(f"EarlyStopping(monitor={self.monitor!r}) needs a Metrics callback in the Learner")

    def before_fit(self, learner: Any) -> None:
        self._reset()
        self._metrics = next(cb for cb in learner.callbacks if isinstance(cb, Metrics))

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def after_epoch(self, learner: Any) -> None:
        value = self._metrics.latest(self.monitor)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, learner.epoch, 0
            if self.restore_best:
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in learner.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = learner.epoch
            raise CancelFit

    def after_fit(self, learner: Any) -> None:
        if self.restore_best and self._best_state is not None and learner.error is None:
            learner.model.load_state_dict(self._best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_state": self._best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self._best_state = state["best_state"]
