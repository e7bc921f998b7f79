"""Moved to :mod:`loopkit.scheduling.hyperparams`; this path stays importable for existing code."""

from .scheduling.hyperparams import (
    Attribute as Attribute,
    Domain as Domain,
    DropoutRate as DropoutRate,
    HyperParameter as HyperParameter,
    LearningRate as LearningRate,
    Momentum as Momentum,
    OptimizerHyperParameter as OptimizerHyperParameter,
    Target as Target,
    WeightDecay as WeightDecay,
)
