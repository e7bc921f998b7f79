"""Moved to :mod:`loopkit.scheduling.schedules`; this path, and its submodules' paths
(``loopkit.schedules.presets`` ...), stay importable for existing code."""

import sys

from .scheduling.schedules import (
    ANNEALS as ANNEALS,
    BoundSchedule as BoundSchedule,
    Product as Product,
    Schedule as Schedule,
    Time as Time,
    anneal,
    compose,
    constant_lr as constant_lr,
    cosine_restarts as cosine_restarts,
    curve as curve,
    epoch_position as epoch_position,
    epochs as epochs,
    exponential_lr as exponential_lr,
    fraction as fraction,
    join as join,
    linear_lr as linear_lr,
    multistep_lr as multistep_lr,
    onecycle as onecycle,
    onecycle_momentum as onecycle_momentum,
    onecycle_torch as onecycle_torch,
    onecycle_torch_momentum as onecycle_torch_momentum,
    polynomial_lr as polynomial_lr,
    presets,
    product as product,
    repeat as repeat,
    scale as scale,
    schedule,
    shift as shift,
    step_lr as step_lr,
    steps as steps,
    stretch as stretch,
    torch_lr,
    warmup_cosine as warmup_cosine,
    warmup_linear as warmup_linear,
)

for _module in (anneal, compose, presets, schedule, torch_lr):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module
