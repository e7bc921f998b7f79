"""Moved to :mod:`loopkit.scheduling.hyperparams`; this path stays importable for existing code."""

from .scheduling.domain import Domain as Domain, Target as Target
from .scheduling.hyperparams import (
    Attribute as Attribute,
    DropoutRate as DropoutRate,
    HyperParameter as HyperParameter,
)
from .scheduling.optimizer_hyperparams import (
    LearningRate as LearningRate,
    Momentum as Momentum,
    OptimizerHyperParameter as OptimizerHyperParameter,
    WeightDecay as WeightDecay,
)
