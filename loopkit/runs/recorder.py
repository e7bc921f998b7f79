"""RunRecorder: the callback that keeps a run's record (:mod:`loopkit.runs.record`) while it trains.

At ``before_fit`` the run becomes STARTED, its record takes the optimizer's real per-group settings
(``optimizer``, :func:`~loopkit.optimizers.optimizer_settings`), and a heartbeat thread starts; after every epoch ``metrics.jsonl``
and the final and best values are rewritten from :attr:`Metrics.history <loopkit.callbacks.Metrics.history>`;
at ``after_fit`` the run becomes FINISHED, PRUNED (the error is Optuna's ``TrialPruned``) or FAILED (any
other error; ``KeyboardInterrupt`` and ``SystemExit`` give the reason ``"interrupted"``) or PREEMPTED (a
signal stopped it after a checkpoint, :class:`~loopkit.callbacks.preemption.Preempted`; the reason names the
signal), and the heartbeat stops. Only the main process (rank 0) writes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from ..callbacks.metrics import Metrics
from ..callbacks.preemption import Preempted
from ..distributed import is_main_process
from ..loop.callback import Callback
from ..optimizers import optimizer_settings
from .record import FAILED, FINISHED, HEARTBEAT_S, PREEMPTED, PRUNED, Heartbeat, Run


def outcome(error: BaseException | None) -> tuple[str, str | None]:
    """``(status, reason)`` for a fit that ended with ``error`` (None: it finished)."""
    if error is None:
        return FINISHED, None
    if isinstance(error, Preempted):
        return PREEMPTED, signal.Signals(error.signal).name
    if type(error).__name__ == "TrialPruned":  # optuna's, recognised without importing optuna
        return PRUNED, "pruned"
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return FAILED, "interrupted"
    return FAILED, "error"


class RunRecorder(Callback):
    """Write ``run``'s status, metrics and heartbeat while the Learner trains.

    Args:
        run: the :class:`~loopkit.runs.record.Run` to record into.
        repro: reproducibility info to store when the run starts (see :func:`~loopkit.runs.reproducibility.reproducibility`).
        heartbeat: seconds between heartbeats.
        beats: more functions the heartbeat thread calls (a sweep adds one that marks its Optuna trial alive).
    """

    reads = ("epoch", "callbacks", "error", "optimizer")
    run_after = ("Metrics",)

    def __init__(
        self,
        run: Run,
        *,
        repro: dict[str, Any] | None = None,
        heartbeat: float = HEARTBEAT_S,
        beats: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.run, self.repro, self.interval, self.beats = run, repro, heartbeat, list(beats)
        self._heartbeat: Heartbeat | None = None
        self._metrics: Metrics | None = None

    def before_fit(self, learner: Any) -> None:
        self._metrics = next((cb for cb in learner.callbacks if isinstance(cb, Metrics)), None)
        if not is_main_process():
            return
        # What the optimizer really uses per group, read from it (not the options that were meant for it).
        self.run.info["optimizer"] = optimizer_settings(learner.optimizer)
        self.run.start(self.repro)
        self._heartbeat = Heartbeat([self.run.beat, *self.beats], self.interval).start()

    def after_epoch(self, learner: Any) -> None:
        if self._metrics is not None and is_main_process():
            self.run.record_epochs(self._metrics.history)

    def after_fit(self, learner: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if is_main_process():
            status, reason = outcome(learner.error)
            self.run.finish(status, learner.error, reason)
