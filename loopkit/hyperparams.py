"""Moved to :mod:`loopkit.scheduling.hyperparams`; this path stays importable for existing code."""

from .scheduling.hyperparams import (
    Attribute as Attribute,
    DropoutRate as DropoutRate,
    HyperParameter as HyperParameter,
    LearningRate as LearningRate,
    Momentum as Momentum,
    OptimizerHyperParameter as OptimizerHyperParameter,
    WeightDecay as WeightDecay,
)
