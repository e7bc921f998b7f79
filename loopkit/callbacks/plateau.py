"""ReduceLROnPlateau: cut the learning rate when a monitored metric stops improving (torch's rule, as a callback).

The same state machine as ``torch.optim.lr_scheduler.ReduceLROnPlateau``, stepped once per epoch at
``after_epoch`` with the epoch's value of a :class:`~loopkit.callbacks.metrics.Metrics` key, so the new rate
applies from the next epoch; ``tests/test_callbacks_plateau.py`` drives both on recorded metric series and
compares every rate. Its state (best, bad epochs, cooldown) is in checkpoints; the rates themselves are in the
optimizer's.

It writes ``optimizer.lr``, as a Scheduler on ``LearningRate`` does: the two cannot both own the rate (the
Learner refuses the clash when it is built).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._validate import whole_number
from ..loop.callback import Callback
from ..scheduling.optimizer_hyperparams import write_option
from ._monitor import latest, monitored_metrics


class ReduceLROnPlateau(Callback):
    """Multiply every param group's lr by ``factor`` after ``patience`` epochs without improvement.

    Args (torch's names and defaults):
        monitor: a Metrics key, e.g. ``"valid_loss"``.
        mode: ``"min"`` or ``"max"``.
        factor: the multiplier, in (0, 1).
        patience: epochs without improvement tolerated; the rate is cut after the ``patience + 1``-th.
        threshold: how much better counts as better: relative (``best * (1 - threshold)`` in min mode,
            ``best * (1 + threshold)`` in max mode) or absolute (``best -/+ threshold``) by ``threshold_mode``.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: epochs after a cut during which bad epochs are not counted.
        min_lr: a floor for every group (groups added during the fit included), or one per group.
        eps: a cut smaller than this is not made.

    Attributes:
        best, num_bad_epochs, cooldown_counter: torch's state, for inspection.

    Raises:
        ValueError: at construction, an argument out of range (quoted); when the learner is built, per-group
            floors for another number of param groups, or a monitored metric nothing produces; at a cut, per-group
            floors when a param group was added during the fit (a single floor covers added groups).

    Example:
        >>> import torch
        >>> from loopkit import Learner, Metrics
        >>> model = torch.nn.Linear(2, 1)
        >>> data = [(torch.randn(4, 2), torch.randn(4, 1))] * 2
        >>> # Only epoch 0 improves (on the initial best, inf): a value must beat the best by 1e9.
        >>> plateau = ReduceLROnPlateau("train_loss", patience=0, factor=0.5, threshold_mode="abs", threshold=1e9)
        >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.8),
        ...                   torch.nn.functional.mse_loss, callbacks=[Metrics(), plateau])
        >>> learner.fit(3).optimizer.param_groups[0]["lr"]  # epoch 0 sets the best; epochs 1 and 2 cut
        0.2
    """

    reads = ("epoch", "callbacks", "metrics")
    writes = ("optimizer.lr",)
    run_after = ("Metrics",)

    def __init__(
        self,
        monitor: str = "valid_loss",
        *,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"ReduceLROnPlateau(monitor={monitor!r}): name a Metrics key such as 'valid_loss'")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau(mode={mode!r}): use 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau(threshold_mode={threshold_mode!r}): use 'rel' or 'abs'")
        if not _real(factor) or not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau(factor={factor!r}) needs a number in (0, 1)")
        whole_number("ReduceLROnPlateau", "patience", patience, 0)
        whole_number("ReduceLROnPlateau", "cooldown", cooldown, 0)
        for what, value in (("threshold", threshold), ("eps", eps)):
            if not _real(value) or not value >= 0:
                raise ValueError(f"ReduceLROnPlateau({what}={value!r}) needs a finite number >= 0")
        floors = list(min_lr) if isinstance(min_lr, Sequence) and not isinstance(min_lr, str) else [min_lr]
        if not floors or not all(_real(v) and v >= 0 for v in floors):
            raise ValueError(f"ReduceLROnPlateau(min_lr={min_lr!r}) needs a number >= 0 or one per param group")
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, float(factor), patience
        self.threshold, self.threshold_mode, self.cooldown, self.eps = float(threshold), threshold_mode, cooldown, eps
        self.min_lr = min_lr
        self._floors = [float(v) for v in floors]
        self._per_group = isinstance(min_lr, Sequence) and not isinstance(min_lr, str)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def check(self, learner: Any) -> None:
        monitored_metrics(learner, self.monitor, "ReduceLROnPlateau")
        n = len(learner.optimizer.param_groups)
        if self._per_group and len(self._floors) != n:
            raise ValueError(
                f"ReduceLROnPlateau(min_lr={self.min_lr!r}) gives {len(self._floors)} floors for {n} param groups; "
                "give one per group or a single number"
            )

    def before_fit(self, learner: Any) -> None:
        monitored_metrics(learner, self.monitor, "ReduceLROnPlateau")
        self._reset()

    def _better(self, value: float) -> bool:
        best, t = self.best, self.threshold
        if self.mode == "min":
            return value < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return value > (best * (1.0 + t) if self.threshold_mode == "rel" else best + t)

    def after_epoch(self, learner: Any) -> None:
        value = float(latest(learner, self.monitor))
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._cut(learner.optimizer)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _cut(self, optimizer: Any) -> None:
        groups = optimizer.param_groups
        if self._per_group and len(groups) != len(self._floors):  # a group was added during the fit
            raise ValueError(
                f"ReduceLROnPlateau(min_lr={self.min_lr!r}) gives {len(self._floors)} floors but the optimizer now "
                f"has {len(groups)} param groups (one was added during the fit); give a single min_lr, which "
                "covers groups added during a fit"
            )
        for i, group in enumerate(groups):
            floor = self._floors[i] if self._per_group else self._floors[0]
            old = float(group["lr"])
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                write_option(group, "lr", new)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.num_bad_epochs = float(state["best"]), int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])


def _real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
