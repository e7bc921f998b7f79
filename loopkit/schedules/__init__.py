"""Schedules: pure functions of training time, with annealing functions, composition and presets.

- :mod:`~loopkit.schedules.schedule`: :class:`Schedule` (knots, values, annealing per segment), time units
  and markers (:func:`steps`, :func:`epochs`, :func:`fraction`), :func:`epoch_position`;
- :mod:`~loopkit.schedules.anneal`: the annealing functions;
- :mod:`~loopkit.schedules.compose`: :func:`join`, :func:`repeat`, :func:`shift`, :func:`stretch`,
  :func:`scale`;
- :mod:`~loopkit.schedules.presets`: one-cycle (fastai's and torch's), warmup + linear or cosine decay,
  cosine with warm restarts;
- :mod:`~loopkit.schedules.torch_lr`: torch's decay schedulers with torch's argument names, and
  :func:`product` (torch's ``ChainedScheduler``).

Every function here checks every argument (finite, in range, bounded work: ``_args``), and every schedule it
accepts evaluates to finite numbers at every finite time (tests/test_schedules_properties.py).
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
from .schedule import BoundSchedule, Schedule, Time, curve, epoch_position, epochs, fraction, steps
from .torch_lr import (
    Product,
    constant_lr,
    exponential_lr,
    linear_lr,
    multistep_lr,
    polynomial_lr,
    product,
    step_lr,
)

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
    "step_lr",
    "multistep_lr",
    "exponential_lr",
    "linear_lr",
    "constant_lr",
    "polynomial_lr",
    "product",
    "Product",
    "curve",
]
