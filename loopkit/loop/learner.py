"""The Learner: owns model, optimizer, data and loop state, and runs the event loop.

The loop reads top to bottom: ``fit`` -> ``_epoch_body`` -> ``_train_phase``/``_valid_phase`` -> one batch. One
primitive, :func:`~loopkit.loop.dispatch.run_level`, wraps every level (epoch, phase, batch): ``before_X``
handlers, the body, then ``after_X`` handlers, which also fire when the body is cancelled with that level's
``Cancel*``. ``fit`` has the same shape, except that ``after_fit`` fires even when an error escapes, so loggers
flush and files close before it propagates. One train batch, and the optimizer step it may close with, is
:mod:`loopkit.loop.train_step`; resuming is :mod:`loopkit.loop.resuming`. Handlers are bound once in ``__init__``.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from ..distributed.collectives import any_rank
from . import evaluation
from .callback import callback_name, check_declared_state, learner_state_names
from .checks import check_arguments, check_budgets, check_count, check_data, is_cancel, length, misplaced
from .data_cursor import DataCursor
from .device import resolve_device
from .dispatch import (
    Handlers,
    add_note,
    build_handlers,
    describe,
    describe_handlers,
    fire,
    handler_name,
    resolve,
    run_all,
    run_level,
)
from .events import Cancel, CancelBatch, CancelEpoch, CancelFit, CancelPhase
from .ordering import order_callbacks
from .resuming import begin_resume, finish_resume, state_of
from .step import Step
from .train_step import discard_window, init_step_state, optimizer_step, prepare_steps, train_batch


class Learner:
    """Train ``model`` on ``train_data`` with ``optimizer`` and ``loss_fn``, dispatching events to callbacks.

    Args:
        model: the ``torch.nn.Module`` to train.
        train_data: an iterable of batches, re-iterated every epoch (a ``DataLoader``, a list, ...).
            By default a batch is ``(xb, yb)``; see :class:`loopkit.loop.step.Step` for other shapes.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters (and the loss's, if it has any).
        loss_fn: called as ``loss_fn(pred, yb)``; must return a scalar tensor. ``None`` (the default): the model
            computes its own loss, as nanoGPT's and Hugging Face models do: it is called as ``model(xb, yb)`` and
            the loss is its output's ``.loss`` or, for a tuple such as nanoGPT's ``(logits, loss)``, its last
            element (see :class:`~loopkit.loop.step.Step`).
        valid_data: optional iterable of batches evaluated after each epoch's train phase, without gradients,
            or a mapping of named evaluation sets, each evaluated as phase ``name`` (its metrics ``<name>_loss``,
            ...; see :mod:`loopkit.loop.evaluation`).
        callbacks: callback instances; their run order is derived from their declarations
            (see :mod:`loopkit.loop.ordering`), not from this list, except among callbacks left unordered.
        step: a :class:`loopkit.loop.step.Step` that customises unpacking, forward and loss.
        device: if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``), the model is moved there and
            every batch is moved there by the default step; a device this machine lacks is a ``ValueError``
            that says which and why. Default: leave the model where it is and batches as they come.

    Raises:
        TypeError: a ``model`` that is not a ``torch.nn.Module``, an ``optimizer`` that is not a
            ``torch.optim.Optimizer``, data that is not an iterable of batches, a ``loss_fn`` that is not
            callable, a ``step`` that is not a :class:`~loopkit.loop.step.Step`; a
            :class:`~loopkit.loop.callback.CallbackError` (a ``TypeError``) for a malformed callback.
        ValueError: empty data, an optimizer that does not own the model's parameters, two callbacks with one
            name, or a callback's ``check`` refusing this learner (a ``Checkpoint(monitor=...)`` without
            ``Metrics``, say); an :class:`~loopkit.loop.ordering.OrderingError` (a ``ValueError``) when the
            callbacks' declarations admit no order. All at construction, before anything runs.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> x = torch.randn(64, 3); y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
        >>> model = torch.nn.Linear(3, 1)
        >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                   torch.nn.functional.mse_loss, valid_data=data)
        >>> learner.fit(20).global_step
        80
        >>> torch.nn.functional.mse_loss(model(x), y).item() < 1e-3
        True
    """

    autocast: Any  # the step's autocast region, or None (loopkit.loop.train_step.init_step_state sets it)

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Iterable,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any = None,
        *,
        valid_data: Iterable | None = None,
        callbacks: Sequence[object] = (),
        step: Step | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        check_arguments(model, train_data, optimizer, loss_fn, step, callbacks)
        evaluation.evaluation_sets(valid_data)
        step = Step() if step is None else step

        self.device = resolve_device(device)
        if self.device is not None:
            model.to(self.device)
        self.model = model
        self.train_data = train_data
        self.valid_data = valid_data
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.step_logic = step
        self.callbacks: list[object] = order_callbacks(callbacks)

        # Loop state; docs/events.md tables when each is valid.
        self.n_epochs: int | None = 0
        self.epoch = 0
        self.phase: str | None = None
        self.batch_idx = 0
        self.n_batches: int | None = length(train_data)
        #: The running fit's ``valid_every`` (batches in an epoch of the loop over a stream), or None.
        self.valid_every: int | None = None
        self.global_step = 0
        self.batch: Any = None
        self.xb: Any = None
        self.yb: Any = None
        self.pred: Any = None
        self.loss: torch.Tensor | None = None
        self.backward_loss: torch.Tensor | None = None
        self.step_loss: torch.Tensor | None = None
        self.max_steps: int | None = None
        self._deadline: float | None = None
        self.error: BaseException | None = None
        self._position: tuple[int, int] | None = (0, 0)
        self._data = DataCursor(self, None)  # where the loop stands in train_data (set per fit)
        self._outside: list[torch.nn.Parameter] = []  # model parameters in no param group (set per fit)
        self._resume: dict[str, Any] | None = None
        # The run record this training belongs to, written into checkpoints (set by loopkit.runs).
        self.run: dict[str, Any] | None = None
        # validate()/predict() called by a callback (ValidateFirst) write the loop's state as the loop does, not
        # through that callback's guarded view.
        self._itself = self
        init_step_state(self)  # micro_batch, accumulate, skipped_steps and the step's policy
        #: The latest finished epoch's means (``{"valid_loss": ...}``), written by Metrics, read by the monitors.
        self.metrics: dict[str, float] = {}
        check_declared_state(self.callbacks, learner_state_names(self))  # a misspelt reads/writes name fails here

        # Callbacks may validate themselves against the built learner (a scheduled attribute must exist).
        for cb in self.callbacks:
            check = getattr(cb, "check", None)
            if callable(check):
                check(self)
        # Every callback sees the learner through its own guarded view (shared state, checked writes).
        self._handlers, self._valid_handlers = build_handlers(self, self.callbacks)
        self._train_body = functools.partial(train_batch, self)
        self._abandon_batch = functools.partial(discard_window, self)

    # ----------------------------------------------------------------------------------------- running
    def fit(
        self,
        n_epochs: int | None = None,
        *,
        max_steps: int | None = None,
        max_time: float | None = None,
        resume_from: str | os.PathLike | dict | None = None,
        valid_every: int | None = None,
    ) -> Learner:
        """Train until ``n_epochs`` epochs, ``max_steps`` optimizer steps or ``max_time`` seconds, whichever first.

        Args:
            n_epochs: total number of epochs of the run (each a train phase, then a valid phase if there is
                valid data), a positive int; may be left out when ``max_steps`` is given. When resuming, the
                total of the whole run, not the number still to go.
            max_steps: stop after this many optimizer steps (skipped steps do not count). The train phase ends
                there; validation and every ``after_*`` handler still run, so metrics, logs and checkpoints
                describe the final model.
            max_time: stop once this many seconds (wall clock, ``time.monotonic``) have passed since ``fit``
                was called, at the end of the batch that crosses it; validation and ``after_*`` still run.
            valid_every: for long or endless training data: an epoch of the loop becomes this many train batches
                of a data stream that continues across epochs (re-iterated whenever it runs out), so validation,
                ``after_epoch`` and what hangs on it (Metrics' history, checkpoints, early stopping, logs) come
                every ``valid_every`` batches. A resume continues the stream where it stood
                (:mod:`loopkit.loop.data_cursor`); it must use the same ``valid_every``.
            resume_from: a checkpoint path (or a loaded ``state_dict``) to continue from: model, optimizer,
                callback states, RNG states and the position in the loop are restored, so the run continues
                exactly as if it had never stopped. The whole checkpoint is verified and checked against this
                learner and fit first: a :class:`~loopkit.resume.file.CheckpointError` (a damaged file, a
                model or optimizer that does not match, a checkpoint at or past the end of this fit) leaves
                the learner exactly as it was.

        Returns:
            the learner, for chaining.

        Raises:
            TypeError: an ``n_epochs`` or ``max_steps`` that is not an int, or neither of them given.
            ValueError: an ``n_epochs`` or ``max_steps`` below 1, a ``max_time`` that is not a positive finite
                number; ``train_data`` that yields no batch in an epoch; a ``resume_from`` that is not a loopkit
                checkpoint or does not fit this run.
            FileNotFoundError: a ``resume_from`` path with no file.
            RuntimeError: 100 optimizer steps in a row were skipped (the run diverged).
            Exception: whatever a callback, the model or the loss raised; every ``after_fit`` handler has run
                by then.
        """
        check_budgets(n_epochs, max_steps, max_time)
        if valid_every is not None:
            check_count("valid_every", valid_every)
        self._data = DataCursor(self, valid_every)
        start_epoch = 0
        if resume_from is not None:  # checked against this fit's settings before anything is loaded
            start_epoch = begin_resume(self, resume_from, n_epochs=n_epochs, max_steps=max_steps)
        else:  # a fresh fit starts at its beginning, whatever an earlier fit of this learner left
            self.global_step, self._position = 0, (0, 0)
        self.valid_every, self.n_epochs, self.max_steps = valid_every, n_epochs, max_steps
        self._deadline = None if max_time is None else time.monotonic() + max_time
        self.n_batches = length(self.train_data) if valid_every is None else valid_every
        self.micro_batch, self.accumulate, self.skipped_steps, self._skips_in_a_row = 0, False, 0, 0
        self.micro_batches_per_step, self.grad_scaler, self.clip_gradients = 1, None, None  # before_fit sets them
        self.error = None
        h = self._handlers
        error: BaseException | None = None
        try:
            held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
            self._outside = [p for p in self.model.parameters() if id(p) not in held]
            self._zero_grad()  # gradients are zeroed after each step; start clean
            fire(h["before_fit"])
            prepare_steps(self)  # the step's policy is set: check it, open the first window
            if self._resume is not None and self._resume["position"]["batch"] == 0:
                finish_resume(self)  # saved between epochs: restore before the next before_epoch
            epochs = range(start_epoch, n_epochs) if n_epochs is not None else itertools.count(start_epoch)
            for epoch in epochs:
                if self._out_of_budget():
                    break
                self.epoch = epoch
                run_level(h["before_epoch"], self._epoch_body, h["after_epoch"], CancelEpoch)
        except CancelFit:
            pass
        except Cancel as cancel:  # a cancel of a level that was not running where it was raised
            error = misplaced(cancel)
        except BaseException as exc:
            error = exc
        self._teardown(error)
        return self

    def _teardown(self, error: BaseException | None) -> None:
        """Run every ``after_fit`` handler; the run's error (if any) propagates, teardown errors attached to it."""
        self._resume = None
        self._data.close(stream_too=True)
        self.error = error
        try:
            raised = [(handler, exc) for handler, exc in run_all(self._handlers["after_fit"]) if not is_cancel(exc)]
        finally:
            self.error = None
        if error is not None:
            for handler, exc in raised:
                add_note(error, f"while tearing down, after_fit of {handler_name(handler)} raised {describe(exc)}")
            raise error
        if raised:
            raise resolve("after_fit", raised)

    def _out_of_budget(self) -> bool:
        # Ranks agree on the deadline (any_rank: one all-reduce a check, with max_time only); global_step agrees.
        return (self.max_steps is not None and self.global_step >= self.max_steps) or (
            self._deadline is not None and any_rank(time.monotonic() >= self._deadline)
        )

    def _epoch_body(self) -> None:
        h = self._handlers
        # Read after before_epoch, where a per-epoch schedule may have changed the batch size, and before
        # before_train, where per-step schedules lay out the phase.
        self.n_batches = self._data.epoch_length()
        try:
            # Modes are set before before_train/before_valid, so a callback there owns them (frozen norm layers
            # put in eval in before_train stay in eval).
            self.phase = "train"
            self.model.train()
            run_level(h["before_train"], self._train_phase, h["after_train"], CancelPhase)
            self._data.close(stream_too=False)  # an epoch's pass ends with its train phase: its workers go
            for phase, data in evaluation.evaluation_sets(self.valid_data):  # each set as its own phase
                self.phase = phase
                self.model.eval()
                with torch.no_grad():  # before_valid and after_valid too, as in validate()
                    body = functools.partial(self._valid_phase, data)
                    run_level(h["before_valid"], body, h["after_valid"], CancelPhase, carry=True)
        finally:
            # Whether the epoch ran out or was cancelled, after_epoch sits at the start of the next one.
            self._position = (self.epoch + 1, 0)

    def _train_phase(self) -> None:
        h = self._handlers
        before, after, body, abandon = h["before_batch"], h["after_batch"], self._train_body, self._abandon_batch
        first = self._resume["position"]["batch"] if self._resume is not None else 0
        batches = self._data.epoch(first)
        if self._resume is not None:  # resumed mid-epoch: the data is back where it stood
            finish_resume(self)
        k, budgeted = self.micro_batches_per_step, self.max_steps is not None or self._deadline is not None
        batch_idx = -1
        for batch_idx, batch in enumerate(batches, first):
            self.batch_idx, self.batch = batch_idx, batch
            self._position = (self.epoch, batch_idx + 1)
            n = self.n_batches  # a window ends after k micro-batches or with the epoch, whichever comes first
            self.accumulate = k > 1 and self.micro_batch + 1 < k and (n is None or batch_idx + 1 < n)
            run_level(before, body, after, CancelBatch, abandon=abandon)
            if budgeted and self._out_of_budget():
                break  # a normal end of the phase: after_train, validation and after_epoch follow
        if batch_idx < 0 and first == 0:
            raise ValueError(f"train_data yielded no batches in epoch {self.epoch}: {self.train_data!r}")
        if self.micro_batch:  # data without a length ended inside an accumulation window: step on what it has
            try:
                optimizer_step(self)
            except CancelBatch as cancel:
                discard_window(self, cancel)

    def _valid_phase(self, data: Iterable) -> None:
        self._position = None  # a checkpoint taken mid-validation could not be resumed exactly
        h = self._valid_handlers
        before, after = h["before_batch"], h["after_batch"]
        body = functools.partial(self._forward_loss, h)
        for batch_idx, batch in enumerate(data):
            self.batch_idx, self.batch = batch_idx, batch
            run_level(before, body, after, CancelBatch)

    def _forward_loss(self, h: dict[str, Handlers]) -> None:
        """Unpack, then forward, ``after_pred`` and loss in the autocast region, then ``after_loss`` (``h``: the
        phase's handlers); the part of a batch every phase shares."""
        step = self.step_logic
        self.xb, self.yb = step.unpack(self, self.batch)
        autocast = self.autocast
        # Written out twice rather than entering a do-nothing context: a `with` costs two calls per batch.
        if autocast is None:
            self.pred = step.forward(self)
            if h["after_pred"]:
                fire(h["after_pred"])
            self.loss = step.loss(self)
        else:
            with autocast:
                self.pred = step.forward(self)
                if h["after_pred"]:
                    fire(h["after_pred"])
                self.loss = step.loss(self)
        if h["after_loss"]:
            fire(h["after_loss"])

    def _zero_grad(self) -> None:
        """Clear the optimizer's gradients and those of model parameters outside it (a backbone added later)."""
        self.optimizer.zero_grad(set_to_none=True)
        for p in self._outside:
            p.grad = None

    # ----------------------------------------------------------------------------------------- evaluating
    def validate(self, data: Iterable | None = None, *, name: str | None = None) -> dict[str, float]:
        """Evaluate on ``data`` (default: every set of ``valid_data``) without training: the valid phase's events
        run.

        Returns ``{"valid_loss": sample-weighted mean loss, ...}`` plus every ``valid_*`` mean a Metrics
        callback computed; with ``name="test"`` the phase is ``"test"`` and every key starts ``test_``. Same
        step, device and precision callbacks as training; see :mod:`loopkit.loop.evaluation`.
        """
        return evaluation.validate(self._itself, data, name)

    def predict(self, data: Iterable) -> Any:
        """The model's predictions for ``data`` (batches as in ``train_data``, or inputs alone).

        Returns the predictions concatenated along dimension 0 when they are tensors, else a list of them.
        """
        check_data(data, "data")
        return evaluation.predict(self._itself, data)

    # ----------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: model, optimizer, callbacks, RNG, loop position.

        Valid in the train phase's events and at ``after_epoch`` (the points a checkpoint can be resumed
        from); raises ``RuntimeError`` during validation.
        """
        return state_of(self)

    # ----------------------------------------------------------------------------------------- inspecting
    @property
    def position(self) -> tuple[int, int] | None:
        """``(epoch, batches done in its train phase)``: where a run resumed from here would continue; ``None``
        during validation, where a checkpoint could not be resumed exactly."""
        return self._position

    def describe(self) -> str:
        """Return, for each event that has handlers, the callbacks that run there, in order (see
        :func:`loopkit.loop.dispatch.describe_handlers`)."""
        return describe_handlers(self._handlers)

    def callback(self, kind: type | str) -> Any:
        """Return the one callback of class (or class name) ``kind``; ``KeyError`` if there is none."""
        for cb in self.callbacks:
            if (isinstance(kind, str) and callback_name(cb) == kind) or (
                isinstance(kind, type) and isinstance(cb, kind)
            ):
                return cb
        raise KeyError(f"no callback {kind!r} among {[callback_name(cb) for cb in self.callbacks]}")

    def __repr__(self) -> str:
        names = ", ".join(callback_name(cb) for cb in self.callbacks)
        return f"Learner(model={type(self.model).__name__}, optimizer={type(self.optimizer).__name__}, callbacks=[{names}])"
