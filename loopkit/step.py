"""Moved to :mod:`loopkit.loop.step`; this path stays importable for existing code."""

from .loop.step import (
    Step as Step,
    to_device as to_device,
)
