"""Moved to :mod:`loopkit.loop.ordering`; this path stays importable for existing code."""

from .loop.ordering import (
    OrderingError as OrderingError,
    order_callbacks as order_callbacks,
)
