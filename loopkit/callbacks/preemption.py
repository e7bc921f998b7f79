"""Preemption: on SIGTERM, save a checkpoint at the next step boundary, tear down, and exit saying so.

Clusters stop jobs with a signal: SLURM sends SIGTERM before the time limit (``#SBATCH --signal=TERM@120``)
and when it preempts a job, Kubernetes and ``kill`` do the same, and SIGKILL follows after a grace period.
With this callback that signal is a normal way to stop: the handler only records it; at the end of the train
batch that completes the current optimizer step (a gradient-accumulation window is finished, not cut), or at
the end of the epoch when it arrives during validation, the run's :class:`~loopkit.callbacks.checkpoint.Checkpoint`
saves a checkpoint and :class:`Preempted` is raised. The Learner then runs every ``after_fit`` handler (loggers
flush, files close) and ``Preempted``, a ``SystemExit``, ends the process with ``exit_code`` (75, ``EX_TEMPFAIL``:
"try again later") unless the caller catches it. ``fit(..., resume_from=Checkpoint.latest(dirpath))`` in the
next process continues bit for bit. ``docs/callbacks.md`` shows the SLURM requeue pattern.

Under ``torch.distributed`` the ranks agree on the step to stop at (one all-reduce of one integer per optimizer
step), so every rank saves and exits at the same boundary even when the signal reaches them at different
moments. The previous signal handlers are restored when the fit ends. A second SIGINT (Ctrl-C pressed twice)
raises ``KeyboardInterrupt`` at once, without waiting for the boundary.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Any

from ..distributed import any_rank
from ..loop.callback import Callback
from .checkpoint import Checkpoint

EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; the user is invited to retry


class Preempted(SystemExit):
    """The run stopped on a signal after saving a checkpoint; ``code`` is the exit status.

    Attributes:
        signal: the signal number received.
        checkpoint: the path of the checkpoint saved (None if the weights were not finite and it was refused, or
            the signal came before the fit).
        run: what a caller that records runs names the stopped run by (``experiment/run``), else None.
    """

    def __init__(self, signum: int, checkpoint: str | None, exit_code: int) -> None:
        super().__init__(exit_code)
        self.signal, self.checkpoint = signum, checkpoint
        self.run: str | None = None

    def __str__(self) -> str:
        name = signal.Signals(self.signal).name
        saved = f"checkpoint {self.checkpoint!r} saved" if self.checkpoint else "no checkpoint saved"
        return f"preempted by {name}: {saved}; exiting with status {self.code}"


class Preemption(Callback):
    """Turn SIGTERM (or ``signals``) into a checkpoint at the next step boundary and an exit with ``exit_code``.

    Args:
        signals: the signals to handle, SIGTERM by default (add ``signal.SIGUSR1`` if your cluster sends that).
        exit_code: the process's exit status once the checkpoint is saved and teardown ran (default 75,
            ``EX_TEMPFAIL``), so a job script can tell "stopped to be resumed" from success and failure.

    Raises:
        ValueError: when the Learner is built without a ``Checkpoint`` callback (there would be nowhere to save),
            or with an empty ``signals`` or an ``exit_code`` outside 1..255 at construction.
        RuntimeError: when the fit starts outside the main thread (Python delivers signals only there).
    """

    agrees_across_ranks = True  # agrees the stop itself (any_rank)

    reads = ("phase", "micro_batch", "callbacks")
    run_after = ("*", "Checkpoint")  # after every callback, Checkpoint included: the state saved is complete

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,), *, exit_code: int = EX_TEMPFAIL) -> None:
        signals = tuple(signals)
        if not signals or not all(isinstance(s, int) for s in signals):
            raise ValueError(f"Preemption(signals={signals!r}): give one or more signal numbers, e.g. signal.SIGTERM")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 1 <= exit_code <= 255:
            raise ValueError(f"Preemption(exit_code={exit_code!r}): use a status in 1..255 (0 would read as success)")
        self.signals, self.exit_code = signals, exit_code
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def check(self, learner: Any) -> None:
        if not any(isinstance(cb, Checkpoint) for cb in learner.callbacks):
            raise ValueError("Preemption needs a Checkpoint callback in the Learner: it saves through it")

    def before_fit(self, learner: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "Preemption handles signals, which Python delivers to the main thread only; call fit from the main "
                "thread, or leave Preemption out"
            )
        self.received = None
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step boundary
        self.received = signum  # only a flag: the loop acts at its next step boundary

    def after_batch(self, learner: Any) -> None:
        # Under torch.distributed the ranks agree (one all-reduce of one integer a step): a rank that stopped
        # alone would leave the others waiting in their next collective.
        if learner.phase == "train" and not learner.micro_batch and any_rank(self.received is not None):
            self._stop(learner)

    def after_epoch(self, learner: Any) -> None:
        if any_rank(self.received is not None):  # arrived during validation, or in a window the epoch ended
            self._stop(learner)

    def after_fit(self, learner: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _stop(self, learner: Any) -> None:
        checkpoint = next(cb for cb in learner.callbacks if isinstance(cb, Checkpoint))
        path = checkpoint.save(learner)
        signum = self.received if self.received is not None else self.signals[0]  # another rank received it
        raise Preempted(signum, path, self.exit_code)
