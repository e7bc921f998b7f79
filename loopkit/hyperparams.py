"""Moved to :mod:`loopkit.scheduling.hyperparams`; this path stays importable for existing code."""

from .scheduling.hyperparams import (
    HyperParameter as HyperParameter,
    OptimizerHyperParameter as OptimizerHyperParameter,
    LearningRate as LearningRate,
    WeightDecay as WeightDecay,
    Momentum as Momentum,
    Attribute as Attribute,
    DropoutRate as DropoutRate,
)
