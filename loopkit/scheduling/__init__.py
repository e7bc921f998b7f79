"""Scheduling: hyperparameters (what a value touches and how it is set), the Scheduler callback that moves them
along schedules, and the scheduled batch size. The schedules themselves are pure functions in
:mod:`loopkit.schedules`, the floor below."""

from .batch_size import BatchSize, ScheduledBatchSampler
from .domain import Domain, Target
from .hyperparams import Attribute, DropoutRate, HyperParameter
from .optimizer_hyperparams import LearningRate, Momentum, OptimizerHyperParameter, WeightDecay
from .scheduler import Scheduler

__all__ = [
    "HyperParameter",
    "OptimizerHyperParameter",
    "LearningRate",
    "Momentum",
    "WeightDecay",
    "DropoutRate",
    "Attribute",
    "Domain",
    "Target",
    "Scheduler",
    "BatchSize",
    "ScheduledBatchSampler",
]
