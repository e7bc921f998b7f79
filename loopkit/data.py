"""Moved to :mod:`loopkit.scheduling.batch_size`; this path stays importable for existing code."""

from .scheduling.batch_size import (
    BatchSize as BatchSize,
    ScheduledBatchSampler as ScheduledBatchSampler,
)
