"""GradientAccumulation: one optimizer step per ``k`` micro-batches, with the gradient of one big batch.

The loss of an optimizer step is the sample-weighted mean over every sample of its window: micro-batch ``i``
of ``n_i`` samples and (batch-mean) loss ``L_i`` contributes ``n_i * L_i / N`` with ``N = sum(n_i)``, so a
window of micro-batches of unequal sizes, or a short window at the end of an epoch, gives exactly the gradient
of one batch made of those samples. ``N`` is only known at the window's end, so backward runs on
``L_i * n_i / (k * n_0)`` (``n_0``: the window's first micro-batch size) and the gradients are rescaled by
``k * n_0 / N`` before ``before_step`` when the window was not ``k`` micro-batches of ``n_0`` samples; a full window
of equal micro-batches (the usual case) is never rescaled, and equals a hand-written loop that backpropagates
``loss / k``.

The clock: ``global_step`` counts optimizer steps, so every schedule (a 100-step warmup is 100 optimizer steps)
and ``max_steps`` count windows, not micro-batches.

Remainder: a window ends after ``k`` micro-batches or at the last batch of the epoch, whichever comes first
(an epoch of 10 batches with ``k=4`` steps after batches 4, 8 and 10). With data of unknown length the Learner
steps on the open window when the epoch's data ends.

A cancel inside a window (``CancelBatch`` or ``CancelStep`` in micro-batch 2 of 4) discards the whole window:
its gradients are zeroed and the next batch starts a new window, so no gradient of a cancelled micro-batch
reaches a step.

Checkpoints are offered only at window boundaries (``Learner.state_dict`` refuses mid-window, and
``Checkpoint`` saves only after a step), so a checkpoint never holds half a window and resumes exactly.

The callback only declares the policy, ``learner.micro_batches_per_step = k``; the step's shape, all of the
above included, is :mod:`loopkit.loop.train_step`. It decides ``learner.accumulate`` before ``before_batch``
fires, so a distributed callback reads it there to skip the gradient all-reduce of the non-final micro-batches
(DDP's ``no_sync``).
"""

from __future__ import annotations

from typing import Any

from .._validate import whole_number
from ..loop.callback import Callback


class GradientAccumulation(Callback):
    """Accumulate gradients over ``k`` micro-batches per optimizer step.

    Args:
        k: micro-batches per optimizer step, an int >= 1.

    Assumes ``loss_fn`` returns the mean over the batch (``reduction="mean"``, torch's default), so that
    ``n_i * L_i`` is the micro-batch's summed loss. ``learner.step_loss`` is the window's loss (the
    sample-weighted mean of the unscaled micro-batch losses), which per-step loggers read; it is computed only
    when a callback declares ``"step_loss"`` in its ``reads`` (TensorBoard does), else it is the last
    micro-batch's loss.

    Raises:
        ValueError: a ``k`` that is not a whole number >= 1.
    """

    agrees_across_ranks = True  # its windows follow the batch count every rank shares

    writes = ("micro_batches_per_step",)
    # Distributed runs before every other callback unless one names it here. Its before_batch reads
    # `accumulate`, which the step decides before before_batch whatever the order, but its before_fit would then
    # see micro_batches_per_step before this callback sets it; kept ahead of it so the policy is in place first.
    run_before = ("Distributed",)

    def __init__(self, k: int) -> None:
        whole_number("GradientAccumulation", "k", k)
        self.k = k

    def __repr__(self) -> str:
        return f"GradientAccumulation({self.k})"

    def check(self, learner: Any) -> None:
        # Known from the start, so a resumed fit's checkpoint is checked against the right steps per epoch.
        learner.micro_batches_per_step = self.k

    def before_fit(self, learner: Any) -> None:
        learner.micro_batches_per_step = self.k  # the Scheduler counts optimizer steps per epoch with it
