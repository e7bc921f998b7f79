"""loopkit: a small, fast, callback-based training loop for PyTorch.

The public API, by floor (docs/contributing.md). Nothing is defined here: each name is defined in its floor's
package, and this is its one documented import path; names a training script rarely needs are imported from
their floor's package (``loopkit.callbacks``, ``loopkit.schedules``, ``loopkit.scheduling``, ``loopkit.runs``,
``loopkit.distributed``, ``loopkit.optim``).
"""

from ._version import __version__

# The loop
from .loop.events import EVENTS, Cancel, CancelBatch, CancelEpoch, CancelFit, CancelPhase, CancelStep
from .resume.file import CheckpointError
from .resume.load import load_checkpoint
from .loop.learner import Learner
from .loop.step import Step

# Callbacks and their ordering
from .loop.callback import Callback, CallbackError, UndeclaredWriteError
from .loop.ordering import OrderingError

# Hyperparameters, schedules, and the Scheduler that applies them
from .scheduling.hyperparams import Attribute, DropoutRate, HyperParameter
from .scheduling.optimizer_hyperparams import LearningRate, Momentum, WeightDecay
from .schedules import Schedule, onecycle, onecycle_momentum, steps
from .scheduling.scheduler import Scheduler

# Stock callbacks
from .callbacks import (
    Checkpoint,
    ClipThreshold,
    Distributed,
    EarlyStopping,
    Export,
    ExportError,
    GradientAccumulation,
    GradientClip,
    LRFinderResult,
    Metrics,
    MixedPrecision,
    NaNGuard,
    Preempted,
    Preemption,
    ProgressBar,
    ReduceLROnPlateau,
    TensorBoard,
    ValidateFirst,
    accuracy,
    export_model,
    lr_find,
)

__all__ = [
    "__version__",
    "EVENTS",
    "Cancel",
    "CancelStep",
    "CancelBatch",
    "CancelEpoch",
    "CancelFit",
    "CancelPhase",
    "Learner",
    "CheckpointError",
    "load_checkpoint",
    "Step",
    "Callback",
    "CallbackError",
    "UndeclaredWriteError",
    "OrderingError",
    "HyperParameter",
    "LearningRate",
    "Momentum",
    "WeightDecay",
    "Attribute",
    "DropoutRate",
    "Schedule",
    "onecycle",
    "onecycle_momentum",
    "steps",
    "Scheduler",
    "Metrics",
    "accuracy",
    "TensorBoard",
    "ProgressBar",
    "Checkpoint",
    "EarlyStopping",
    "ValidateFirst",
    "NaNGuard",
    "Preemption",
    "Preempted",
    "Distributed",
    "MixedPrecision",
    "GradientAccumulation",
    "GradientClip",
    "ClipThreshold",
    "lr_find",
    "LRFinderResult",
    "ReduceLROnPlateau",
    "Export",
    "ExportError",
    "export_model",
]
