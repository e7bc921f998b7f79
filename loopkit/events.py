"""Moved to :mod:`loopkit.loop.events`; this path stays importable for existing code."""

from .loop.events import (
    EVENTS as EVENTS,
    TRAIN_ONLY_EVENTS as TRAIN_ONLY_EVENTS,
    CancelBatch as CancelBatch,
    CancelEpoch as CancelEpoch,
    CancelFit as CancelFit,
    CancelPhase as CancelPhase,
)
