"""loopkit: a small, fast, callback-based training loop for PyTorch.

The public API, by layer. Nothing is defined here.
"""

# The loop
from .events import EVENTS, CancelBatch, CancelEpoch, CancelFit, CancelPhase
from .learner import Learner
from .step import Step

# Callbacks and their ordering
from .callback import Callback, CallbackError, UndeclaredWriteError
from .ordering import OrderingError

__all__ = [
    "EVENTS", "CancelBatch", "CancelEpoch", "CancelFit", "CancelPhase",
    "Learner", "Step",
    "Callback", "CallbackError", "UndeclaredWriteError", "OrderingError",
]
