"""Moved to :mod:`loopkit.loop.guard`; this path stays importable for existing code."""

from .loop.guard import (
    guarded_view as guarded_view,
)
