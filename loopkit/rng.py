"""Moved to :mod:`loopkit.loop.rng`; this path stays importable for existing code."""

from .loop.rng import (
    capture_rng_state as capture_rng_state,
    restore_rng_state as restore_rng_state,
)
