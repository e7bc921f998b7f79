"""ValidateFirst: evaluate the model before its first optimizer step, as nanoGPT does at iteration 0.

The evaluation runs at the start of a fit that stands at global step 0 (a fresh fit, or one resumed from a
checkpoint taken before any step), in ``before_epoch`` of its first epoch: every evaluation set of
``valid_data`` (:mod:`loopkit.loop.evaluation`), each as its own phase with its own events, under the step's
settings (device, autocast) the fit has set up by then. Its means become the learner's ``metrics`` as a row for
epoch ``-1`` (the epoch before the first), so:

- :class:`~loopkit.callbacks.metrics.Metrics` keeps the row first in its ``history`` (and a run records it first
  in ``metrics.jsonl``);
- :class:`~loopkit.callbacks.checkpoint.Checkpoint` counts it for ``best``: the untrained model is saved as
  ``best.pt`` when the monitored value is finite, and a later epoch must beat it to replace it (nanoGPT's
  ``best_val_loss`` starts from its iteration-0 evaluation);
- :class:`~loopkit.callbacks.early_stopping.EarlyStopping` counts it as its first best: patience runs from the
  untrained model's value (Keras calls this a ``baseline``).

Example:
    >>> import torch
    >>> from loopkit import Learner, Metrics
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> data = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(4)]
    >>> model = torch.nn.Linear(3, 1)
    >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1),
    ...                   torch.nn.functional.mse_loss, valid_data=data, callbacks=[Metrics(), ValidateFirst()])
    >>> [row["epoch"] for row in learner.fit(2).callback(Metrics).history]
    [-1, 0, 1]
"""

from __future__ import annotations

from typing import Any

from ..loop.callback import Callback
from ..loop.evaluation import evaluation_sets

BEFORE_TRAINING = -1  # the epoch of the row ValidateFirst writes


class ValidateFirst(Callback):
    """Evaluate every evaluation set once before the first optimizer step; see the module docstring.

    Raises:
        ValueError: at the start of fit, a Learner without ``valid_data``.
    """

    reads = ("valid_data", "global_step", "epoch")
    writes = ("metrics",)  # the row of epoch -1, before Metrics (which writes it too) keeps it
    run_before = ("Metrics",)

    def __init__(self) -> None:
        self._done = False

    def before_fit(self, learner: Any) -> None:
        if learner.valid_data is None:
            raise ValueError(
                "ValidateFirst evaluates valid_data before training, but the Learner has none; pass "
                "valid_data=... (one set, or a mapping of named sets) or drop ValidateFirst"
            )
        self._done = False

    def before_epoch(self, learner: Any) -> None:
        if self._done or learner.global_step != 0:
            return
        self._done = True
        row: dict[str, float] = {"epoch": BEFORE_TRAINING}
        for name, data in evaluation_sets(learner.valid_data):
            row.update(learner.validate(data, name=name))
        learner.metrics = row


def first_evaluation(learner: Any) -> dict[str, float] | None:
    """The row :class:`ValidateFirst` wrote at the start of this fit, while the loop still stands there (global
    step 0, before the first epoch's train phase); None otherwise."""
    row = learner.metrics
    if row.get("epoch") == BEFORE_TRAINING and learner.global_step == 0:
        return row
    return None


__all__ = ["ValidateFirst", "first_evaluation"]
