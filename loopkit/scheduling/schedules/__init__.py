"""Schedules: pure functions of training time, with annealing functions, composition and presets.

- :mod:`~loopkit.scheduling.schedules.schedule`: :class:`Schedule` (knots, values, annealing per segment), time units
  and markers (:func:`steps`, :func:`epochs`, :func:`fraction`), :func:`epoch_position`;
- :mod:`~loopkit.scheduling.schedules.anneal`: the annealing functions;
- :mod:`~loopkit.scheduling.schedules.compose`: :func:`join`, :func:`repeat`, :func:`shift`, :func:`stretch`,
  :func:`scale`;
- :mod:`~loopkit.scheduling.schedules.presets`: one-cycle (fastai's and torch's), warmup + linear or cosine decay,
  cosine with warm restarts.
"""

from .anneal import ANNEALS
from .compose import join, repeat, scale, shift, stretch
from .presets import (
    cosine_restarts,
    onecycle,
    onecycle_momentum,
    onecycle_torch,
    onecycle_torch_momentum,
    warmup_cosine,
    warmup_linear,
)
from .schedule import BoundSchedule, Schedule, Time, epoch_position, epochs, fraction, steps

__all__ = [
    "Schedule",
    "BoundSchedule",
    "Time",
    "steps",
    "epochs",
    "fraction",
    "epoch_position",
    "ANNEALS",
    "join",
    "repeat",
    "shift",
    "stretch",
    "scale",
    "onecycle",
    "onecycle_momentum",
    "onecycle_torch",
    "onecycle_torch_momentum",
    "warmup_linear",
    "warmup_cosine",
    "cosine_restarts",
]
