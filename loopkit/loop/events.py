"""The closed set of events a Learner fires, and the exceptions that cancel a level of the loop.

The loop is nested: fit > epoch > phase (train, then valid) > batch > step. Every level is wrapped the same
way (see :func:`loopkit.loop.dispatch.run_level`): ``before_X`` fires, the body runs, and ``after_X`` fires both when the body
completes and when it is cancelled with the level's ``Cancel*`` exception. The step is the one exception:
``after_step`` means an optimizer step was applied, so a cancelled step fires no ``after_step``.

How the handlers of one event run (``loopkit.loop.dispatch``): every handler runs, whatever an earlier one
raised; once all ran, an error wins over cancels, otherwise the outermost cancel takes effect. A cancel ends
its level: the unfinished inner levels do not get their ``after_*`` (a batch cut short by ``CancelEpoch`` is
not a finished batch). A cancel raised in its own level's ``after_X`` ends nothing (the level is over). An
error skips the inner ``after_*`` events, fires every ``after_fit`` handler (so loggers flush and files
close) and then propagates; ``learner.error`` holds it during ``after_fit``.

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
    "before_backward",
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
TRAIN_ONLY_EVENTS: frozenset[str] = frozenset({"before_backward", "after_backward", "before_step", "after_step"})

#: Events that fire once (or more) per batch.
BATCH_EVENTS: frozenset[str] = frozenset(
    {"before_batch", "after_pred", "after_loss", "after_batch"} | TRAIN_ONLY_EVENTS
)


class Cancel(Exception):
    """Base of the ``Cancel*`` exceptions; ``level`` orders them (a higher level is further out)."""

    level = -1


class CancelBatch(Cancel):
    """Raise from a callback to skip the rest of the current batch; ``after_batch`` still fires.

    In the train phase the batch takes no optimizer step and its accumulation window's gradients are
    discarded, so nothing of it reaches a later step.
    """

    level = 1


class CancelStep(CancelBatch):
    """Raise to skip the optimizer step of the current batch (non-finite gradients, a loss scaler's skip).

    Raised in any train event before the step (``before_batch`` to ``before_step``): the event's other
    handlers still run, the rest of the batch's work up to and including the step is skipped, the window's
    gradients are discarded, ``after_step`` does not fire and ``global_step`` does not advance;
    ``after_batch`` fires. It is a :class:`CancelBatch` whose reason is the step: a run that skips 100 steps in
    a row stops with an error (it diverged). Raised in ``after_step`` it is an error (the step was applied);
    in validation, where there is no step, it ends the batch like ``CancelBatch``.
    """

    level = 0


class CancelPhase(Cancel):
    """Raise to end the current train or valid phase early; its ``after_train``/``after_valid`` fires."""

    level = 2


class CancelEpoch(Cancel):
    """Raise to end the current epoch early (the valid phase is skipped if not yet run); ``after_epoch`` fires."""

    level = 3


class CancelFit(Cancel):
    """Raise to stop training; ``after_fit`` fires and ``fit`` returns normally."""

    level = 4
