"""Moved to :mod:`loopkit.scheduling.schedules`; this path, and its submodules' paths
(``loopkit.schedules.presets`` ...), stay importable for existing code."""

import sys

from .scheduling.schedules import (
    Schedule as Schedule,
    BoundSchedule as BoundSchedule,
    Time as Time,
    steps as steps,
    epochs as epochs,
    fraction as fraction,
    epoch_position as epoch_position,
    ANNEALS as ANNEALS,
    join as join,
    repeat as repeat,
    shift as shift,
    stretch as stretch,
    scale as scale,
    onecycle as onecycle,
    onecycle_momentum as onecycle_momentum,
    onecycle_torch as onecycle_torch,
    onecycle_torch_momentum as onecycle_torch_momentum,
    warmup_linear as warmup_linear,
    warmup_cosine as warmup_cosine,
    cosine_restarts as cosine_restarts,
)
from .scheduling.schedules import anneal, compose, presets, schedule

for _module in (anneal, compose, presets, schedule):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
