"""OptunaPruning: report the monitored metric to an Optuna trial after every epoch, and stop unpromising runs.

After each epoch the callback reports ``Metrics.history[-1][monitor]`` as the trial's intermediate value at
step ``epoch`` and asks the study's pruner; if it says prune, it raises ``optuna.TrialPruned``, which ends the
fit (every ``after_fit`` handler runs) and marks the run PRUNED (:mod:`loopkit.runs.recorder`).
"""

from __future__ import annotations

from typing import Any

from ..callbacks.metrics import Metrics
from ..loop.callback import Callback


class OptunaPruning(Callback):
    """Report ``monitor`` to ``trial`` (an ``optuna.Trial``) each epoch; raise ``optuna.TrialPruned`` to prune.

    Raises:
        KeyError: after the first epoch, if the Metrics history has no ``monitor`` (naming the keys it has).
    """

    reads = ("epoch", "callbacks")
    run_after = ("Metrics", "RunRecorder")

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self._metrics: Metrics | None = None

    def check(self, learner: Any) -> None:
        self._metrics = next((cb for cb in learner.callbacks if isinstance(cb, Metrics)), None)
        if self._metrics is None:
            raise ValueError(f"OptunaPruning(monitor={self.monitor!r}) needs a Metrics callback in the Learner")

    def after_epoch(self, learner: Any) -> None:
        import optuna

        metrics = self._metrics
        if metrics is None:  # check() found none; the Learner refused to build then
            return
        value = metrics.latest(self.monitor)
        self.trial.report(value, step=learner.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {learner.epoch}: {self.monitor}={value:.6g}")
