"""Moved to :mod:`loopkit.scheduling.scheduler`; this path stays importable for existing code."""

from .scheduling.scheduler import (
    Scheduler as Scheduler,
)
