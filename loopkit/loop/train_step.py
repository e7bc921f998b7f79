"""The shape of a training step, in one place: micro-batches, the autocast region, backward, unscale and clip,
the optimizer step or a skipped one.

Read with nanoGPT's ``for micro_step in range(k)`` block beside it; one train batch of the Learner is one
micro-step, and the batch that closes its window takes the step::

    for micro_step in range(k):                   # learner.micro_batches_per_step (GradientAccumulation)
        with autocast:                            # learner.autocast (MixedPrecision): forward and loss only
            pred = model(xb); loss = loss_fn(pred, yb)
        loss = loss * n / (k * n0)                # this micro-batch's share of the window's mean
        scaler.scale(loss).backward()             # learner.grad_scaler (MixedPrecision, float16)
    grads *= k * n0 / N                           # only a short or uneven window: the mean over its N samples
    scaler.unscale_(optimizer)
    clip_gradients()                              # learner.clip_gradients (GradientClip)
    scaler.step(optimizer); scaler.update()       # a step whose gradients are not finite is skipped
    optimizer.zero_grad(set_to_none=True)

The callbacks supply *policy* only, as declared learner state they write in ``check``/``before_fit``; none of
them runs a part of the step. The state, with its default (the plain fp32 step):

- ``micro_batches_per_step`` (1): micro-batches per optimizer step.
- ``autocast`` (None): a reusable autocast context manager, entered around forward, ``after_pred`` and loss.
- ``grad_scaler`` (None): a ``torch.amp.GradScaler``; steps it skips count in ``skipped_by_scaler``.
- ``clip_gradients`` (None): called with the learner once the gradient is complete and unscaled.
- ``accumulate``: decided here before ``before_batch`` (a callback may overrule it there); True while the
  window goes on. A distributed callback reads it in ``before_batch`` to turn gradient synchronisation off for
  the non-final micro-batches (DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``).

Closure optimizers (``torch.optim.LBFGS``) re-evaluate the loss themselves: for them the batch has no forward of
its own; :func:`make_closure` makes LBFGS a closure that is the only forward and backward, with the events
inside it.
"""

from __future__ import annotations

from typing import Any

import torch

from .dispatch import Handlers, fire
from .evaluation import batch_size
from .events import CancelStep

#: Consecutive skipped optimizer steps after which a fit stops with an error: the run has diverged.
MAX_SKIPPED_IN_A_ROW = 100


def is_closure_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` needs a closure that re-evaluates the loss (``torch.optim.LBFGS``)."""
    return isinstance(optimizer, torch.optim.LBFGS)


def init_step_state(learner: Any) -> None:
    """The step's learner state, with the plain fp32 step's policy (see the module docstring)."""
    learner.micro_batch = 0  # the batch's index in its accumulation window
    learner.accumulate = False  # the window goes on after this batch
    learner.skipped_steps = 0  # steps cancelled with CancelStep this fit (the scaler's skips included)
    learner._skips_in_a_row = 0
    learner.micro_batches_per_step = 1
    learner.autocast = None
    learner.grad_scaler = None
    learner.clip_gradients = None
    learner.skipped_by_scaler = 0
    learner._window_sizes = None  # the open window's micro-batch sizes (accumulation only)
    learner._window_losses = None  # and their losses, when a callback reads step_loss
    learner._closure = False  # the optimizer re-evaluates the loss through a closure (LBFGS)


def prepare_steps(learner: Any) -> None:
    """At fit start, once ``before_fit`` has set the policy: refuse what cannot work, open the first window."""
    k = learner.micro_batches_per_step
    learner._closure = is_closure_optimizer(learner.optimizer)
    if learner._closure and (k > 1 or learner.grad_scaler is not None):
        what = f"gradient accumulation (k={k})" if k > 1 else "a float16 GradScaler (MixedPrecision(torch.float16))"
        raise ValueError(
            f"{type(learner.optimizer).__name__} re-evaluates the loss through a closure at every step, which "
            f"cannot be combined with {what}: the closure's gradient is the whole step's. Drop it, or use "
            "torch.bfloat16 (no scaler), or an optimizer without a closure"
        )
    every = learner.valid_every
    if every is not None and every % k:
        raise ValueError(
            f"fit(valid_every={every}) counts train batches, and with gradient accumulation (k={k}) it is not a "
            f"whole number of optimizer steps: every epoch of the loop would end on a short window. Use a "
            f"multiple of {k}, such as valid_every={every - every % k or k}"
        )
    wanted = any("step_loss" in getattr(cb, "reads", ()) for cb in learner.callbacks)
    learner._window_sizes = [] if k > 1 else None
    learner._window_losses = [] if k > 1 and wanted else None  # the window's mean loss costs a few ops a step


def train_batch(learner: Any) -> None:
    """The body of one train batch: forward and loss, backward, and the step when the batch closes its window."""
    if learner._closure:
        optimizer_step(learner)  # the closure is the batch's only forward and backward
        return
    h = learner._handlers
    learner._forward_loss(h)
    loss = learner.loss
    sizes = learner._window_sizes
    if sizes is not None:  # accumulation: backward on this micro-batch's share of the window's mean
        n = batch_size(learner)
        sizes.append(n)
        if learner._window_losses is not None:
            learner._window_losses.append(loss.detach())
        loss = loss * (n / (learner.micro_batches_per_step * sizes[0]))
    learner.backward_loss = loss
    if h["before_backward"]:  # no call at all for an event without handlers
        fire(h["before_backward"])
    scaler = learner.grad_scaler
    if scaler is None:
        learner.backward_loss.backward()
    else:
        scaler.scale(learner.backward_loss).backward()
    if h["after_backward"]:
        fire(h["after_backward"])
    if learner.accumulate:  # the window goes on: its gradients wait for its last micro-batch
        learner.micro_batch += 1
        return
    optimizer_step(learner)


def optimizer_step(learner: Any) -> None:
    """The step level: complete the gradient, before_step, the optimizer step (or a skip), zero, after_step.

    ``after_step`` fires only for a step that was applied; a skipped step raises ``CancelStep``.
    """
    h = learner._handlers
    optimizer = learner.optimizer
    scaler = learner.grad_scaler
    if learner._closure:
        if h["before_step"]:  # no gradient yet: the closure computes it
            fire(h["before_step"])
        learner.step_loss = optimizer.step(make_closure(learner))
    else:
        if learner._window_sizes is None:
            learner.step_loss = learner.loss
        else:
            complete_window(learner)
        if scaler is not None:
            scaler.unscale_(optimizer)
        try:
            if learner.clip_gradients is not None:
                learner.clip_gradients(learner)
            if h["before_step"]:
                fire(h["before_step"])
        except BaseException:
            if scaler is not None:
                scaler.update()  # the unscaled window is dropped; the scaler starts its next step clean
            raise
        if scaler is None:
            optimizer.step()
        else:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() < scale:  # backed off: the gradients were not finite, the step was skipped
                learner.skipped_by_scaler += 1
                raise CancelStep("the GradScaler found non-finite gradients and skipped the step")
    optimizer.zero_grad(set_to_none=True)
    for p in learner._outside:
        p.grad = None
    learner.global_step += 1
    learner.micro_batch = learner._skips_in_a_row = 0
    try:
        fire(h["after_step"])
    except CancelStep as cancel:
        raise RuntimeError(
            f"{type(cancel).__name__} was raised in after_step, after the optimizer step was applied; raise "
            "it in before_step (or earlier) to skip a step"
        ) from cancel


def complete_window(learner: Any) -> None:
    """The window's gradient and loss: a short or uneven window is rescaled to the mean over its samples."""
    sizes = learner._window_sizes
    total = sum(sizes)
    nominal = learner.micro_batches_per_step * sizes[0]
    if total != nominal:  # a short window, or micro-batches of unequal sizes
        optimizer = learner.optimizer
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, nominal / total)
    losses = learner._window_losses
    if losses is None or len(sizes) == 1:
        learner.step_loss = learner.loss
    else:
        weights = torch.tensor(sizes, dtype=torch.float32).to(losses[0].device, non_blocking=True)
        learner.step_loss = torch.stack(losses).float() @ weights / total
    sizes.clear()
    if losses is not None:
        losses.clear()


def discard_window(learner: Any, exc: BaseException) -> None:
    """A train batch left by a cancel or an error: drop its window's gradients; count a skipped step."""
    learner._zero_grad()
    learner.micro_batch = 0
    if learner._window_sizes is not None:
        learner._window_sizes.clear()
        if learner._window_losses is not None:
            learner._window_losses.clear()
    if isinstance(exc, CancelStep):
        learner.skipped_steps += 1
        learner._skips_in_a_row += 1
        if learner._skips_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise RuntimeError(
                f"{MAX_SKIPPED_IN_A_ROW} optimizer steps in a row were skipped (the last at epoch {learner.epoch}, "
                f"batch {learner.batch_idx}, global step {learner.global_step}): the run has diverged (a loss "
                "scaler skips steps whose gradients are not finite); lower the learning rate or check the data"
            ) from exc


def make_closure(learner: Any) -> Any:
    """The closure a closure optimizer calls: zero, forward and loss (with ``after_pred``/``after_loss`` on its
    first evaluation), ``before_backward``, backward, ``after_backward``, the clip policy; returns the loss."""
    h = learner._handlers
    quiet = {**h, "after_pred": Handlers("after_pred"), "after_loss": Handlers("after_loss")}
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        learner._zero_grad()
        learner._forward_loss(quiet if evaluations else h)
        evaluations += 1
        learner.backward_loss = learner.loss
        if h["before_backward"]:
            fire(h["before_backward"])
        learner.backward_loss.backward()
        if h["after_backward"]:
            fire(h["after_backward"])
        if learner.clip_gradients is not None:
            learner.clip_gradients(learner)
        return learner.loss

    return closure
