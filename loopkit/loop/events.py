"""The closed set of events a Learner fires, and the exceptions that cancel a level of the loop.

The loop is nested: fit > epoch > phase (train, then valid) > batch > (pred, loss, backward, step).
Every level is wrapped the same way (see ``Learner._level``): ``before_X`` fires, the body runs, and
``after_X`` fires both when the body completes and when it is cancelled with the level's ``Cancel*``
exception. A cancel ends its level at once: the unfinished inner levels do not get their ``after_*``
(a batch cut short by ``CancelEpoch`` is not a finished batch, and an epoch cut short by ``CancelFit`` is not
a finished epoch, so nothing that runs "at the end of an epoch" sees a partial one). A foreign exception skips the inner ``after_*`` events, unwinds, fires ``after_fit`` (so
loggers flush and files close) and then propagates; ``learner.error`` holds it during ``after_fit``.

``docs/events.md`` tables, for each event, which learner state exists there.
"""

from __future__ import annotations

#: Every event, in the order a training batch meets them. A callback method whose name starts with
#: ``before_`` or ``after_`` must be one of these.
EVENTS: tuple[str, ...] = (
    "before_fit",
    "before_epoch",
    "before_train",
    "before_valid",
    "before_batch",
    "after_pred",
    "after_loss",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
    "after_train",
    "after_valid",
    "after_epoch",
    "after_fit",
)

#: Events that fire only in the train phase: there is no backward pass or optimizer step in validation.
TRAIN_ONLY_EVENTS: frozenset[str] = frozenset({"after_backward", "before_step", "after_step"})


class CancelBatch(Exception):
    """Raise from a callback to skip the rest of the current batch; ``after_batch`` still fires."""


class CancelPhase(Exception):
    """Raise to end the current train or valid phase early; its ``after_train``/``after_valid`` fires."""


class CancelEpoch(Exception):
    """Raise to end the current epoch early (the valid phase is skipped if not yet run); ``after_epoch`` fires."""


class CancelFit(Exception):
    """Raise to stop training; ``after_fit`` fires and ``fit`` returns normally."""
