"""Moved to :mod:`loopkit.loop.checkpoint`; this path stays importable for existing code."""

from .loop.checkpoint import (
    load_checkpoint as load_checkpoint,
    save_atomic as save_atomic,
)
