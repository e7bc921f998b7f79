"""Moved to :mod:`loopkit.scheduling.schedules`; this path, and its submodules' paths
(``loopkit.schedules.presets`` ...), stay importable for existing code."""

import sys

from .scheduling.schedules import (
    ANNEALS as ANNEALS,
    BoundSchedule as BoundSchedule,
    Schedule as Schedule,
    Time as Time,
    anneal,
    compose,
    cosine_restarts as cosine_restarts,
    epoch_position as epoch_position,
    epochs as epochs,
    fraction as fraction,
    join as join,
    onecycle as onecycle,
    onecycle_momentum as onecycle_momentum,
    onecycle_torch as onecycle_torch,
    onecycle_torch_momentum as onecycle_torch_momentum,
    presets,
    repeat as repeat,
    scale as scale,
    schedule,
    shift as shift,
    steps as steps,
    stretch as stretch,
    warmup_cosine as warmup_cosine,
    warmup_linear as warmup_linear,
)

for _module in (anneal, compose, presets, schedule):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
