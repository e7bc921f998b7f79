"""Signals around a recorded run: SIGTERM and SIGINT end the process with status 75 and say how to resume.

Inside the fit, :class:`~loopkit.callbacks.Preemption` saves a checkpoint first; :func:`signals_end_the_process`
covers the rest of a command (loading, building, writing the record), and :func:`preempted` prints the message.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

from ..callbacks.preemption import EX_TEMPFAIL, Preempted

EXIT_PREEMPTED = EX_TEMPFAIL  # 75


class signals_end_the_process:
    """Outside the fit (loading, building, writing the record), SIGTERM and SIGINT raise :class:`Preempted` with no
    checkpoint, so the run is recorded and the process ends with status 75; inside the fit Preemption saves
    first. The previous handlers come back on exit."""

    def __enter__(self) -> None:
        self._previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: signals are not ours to handle
                self._previous[signum] = signal.signal(signum, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise Preempted(signum, None, EXIT_PREEMPTED)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def preempted(stop: Preempted) -> int:
    """Say that a signal stopped the run and how to resume it; the exit status (75)."""
    hint = f"python -m loopkit.runs resume {stop.run}" if stop.run else "python -m loopkit.runs resume EXPERIMENT/RUN"
    print(f"loopkit: {stop}; resume it with: {hint}", file=sys.stderr)
    return int(stop.code) if isinstance(stop.code, int) else EXIT_PREEMPTED
