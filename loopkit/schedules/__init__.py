"""Schedules: pure functions of training time, with annealing functions, composition and presets.

- :mod:`~loopkit.schedules.schedule`: :class:`Schedule` (knots, values, annealing per segment), time units
  and markers (:func:`steps`, :func:`epochs`, :func:`fraction`), :func:`epoch_position`;
- :mod:`~loopkit.schedules.bound`: :class:`BoundSchedule`, a schedule laid out on steps or epochs, as the
  Scheduler evaluates it;
- :mod:`~loopkit.schedules.anneal`: the annealing functions, with shape exponents (:func:`power`,
  :func:`cosine`);
- :mod:`~loopkit.schedules.compose`: :func:`join`, :func:`repeat`, :func:`shift`, :func:`stretch`,
  :func:`scale`;
- :mod:`~loopkit.schedules.onecycle`: the one-cycle policy, fastai's and torch's;
- :mod:`~loopkit.schedules.presets`: warmup + linear or cosine decay, cosine with warm restarts;
- :mod:`~loopkit.schedules.decay`: transformers', optax's and timm's decays torch lacks: polynomial to
  an end value, warmup-stable-decay, inverse square root, optax's three-phase linear one-cycle;
- :mod:`~loopkit.schedules.protocol`: what a schedule object is (yours too), and composition of any;
- :mod:`~loopkit.schedules.torch_lr`: torch's decay schedulers with torch's argument names, and
  :func:`product` (torch's ``ChainedScheduler``).

Every function here checks every argument (finite, in range, bounded work: ``_args``), and every schedule it
accepts evaluates to finite numbers at every finite time (tests/test_schedules_validation.py, with Hypothesis).
"""

from .anneal import ANNEALS, cosine, power
from .bound import BoundSchedule
from .compose import join, repeat, scale, shift, stretch
from .decay import inverse_sqrt, linear_onecycle, warmup_polynomial, warmup_stable_decay
from .onecycle import onecycle, onecycle_momentum, onecycle_torch, onecycle_torch_momentum
from .presets import cosine_restarts, warmup_cosine, warmup_linear
from .schedule import Schedule, Time, curve, epoch_position, epochs, fraction, steps
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
    "power",
    "cosine",
    "warmup_polynomial",
    "warmup_stable_decay",
    "inverse_sqrt",
    "linear_onecycle",
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
