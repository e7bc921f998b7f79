"""Moved to :mod:`loopkit.loop.checkpoint`; this path stays importable for existing code."""

from .loop.checkpoint import (
    save_atomic as save_atomic,
    load_checkpoint as load_checkpoint,
)
