"""Stock callbacks, one concern per module. Each declares its state access like any user's callback."""

from .checkpoint import Checkpoint
from .distributed import Distributed, destroy_process_group
from .early_stopping import EarlyStopping
from .export import Export, ExportError, export_model
from .gradient_accumulation import GradientAccumulation
from .gradient_clip import ClipThreshold, GradientClip
from .lr_finder import LRFinderResult, lr_find
from .metrics import Metrics, accuracy
from .mixed_precision import MixedPrecision
from .nan_guard import NaNGuard
from .plateau import ReduceLROnPlateau
from .preemption import Preempted, Preemption
from .progress import ProgressBar
from .tensorboard import TensorBoard
from .validate_first import ValidateFirst

__all__ = [
    "Distributed",
    "destroy_process_group",
    "Metrics",
    "accuracy",
    "TensorBoard",
    "ProgressBar",
    "Checkpoint",
    "EarlyStopping",
    "ValidateFirst",
    "NaNGuard",
    "MixedPrecision",
    "GradientAccumulation",
    "GradientClip",
    "ClipThreshold",
    "lr_find",
    "LRFinderResult",
    "Preemption",
    "Preempted",
    "ReduceLROnPlateau",
    "Export",
    "ExportError",
    "export_model",
]
