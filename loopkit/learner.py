"""Moved to :mod:`loopkit.loop.learner`; this path stays importable for existing code."""

from .loop.learner import (
    Learner as Learner,
)
