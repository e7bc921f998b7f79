"""The Learner: owns model, optimizer, data and loop state, and runs the event loop.

One primitive, :meth:`Learner._level`, wraps every level of the loop (epoch, phase, batch) the same way:
``before_X`` handlers, the body, then ``after_X`` handlers, which also fire when the body is cancelled with
that level's ``Cancel*`` exception. ``fit`` wraps the whole run in the same shape, with one difference:
``after_fit`` fires even when an error escapes, so loggers flush and files close before it propagates.

The hot path is precomputed: the handlers for each event are a tuple of bound callables built once in
``__init__``; with no callbacks an event costs one empty ``for`` loop and no function call.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ..distributed.collectives import any_rank
from ..distributed.ranks import is_distributed
from ..resume.load import load_checkpoint
from ..resume.model import load_model_and_optimizer, restore_group_options
from ..resume.rng import restore_rng_state
from . import evaluation
from .callback import callback_name, check_declared_state, handled_events, learner_state_names, validate_callback
from .checks import (
    check_budgets,
    check_count,
    check_data,
    check_model,
    check_optimizer,
    check_unique_names,
    is_cancel,
    length,
    misplaced,
)
from .data_cursor import DataCursor
from .device import resolve_device
from .dispatch import Handlers, add_note, describe, fire, handler_name, resolve, run_all
from .events import BATCH_EVENTS, EVENTS, Cancel, CancelBatch, CancelEpoch, CancelFit, CancelPhase, CancelStep
from .guard import guarded_view
from .learner_state import (
    build_state,
    check_fits,
    data_of_this_rank,
    rank_and_world_size,
    replaces_train_data,
    resumed_epoch_length,
    rng_of_this_rank,
)
from .ordering import order_callbacks
from .step import Step

#: Consecutive skipped optimizer steps after which a fit stops with an error: the run has diverged.
MAX_SKIPPED_IN_A_ROW = 100


class Learner:
    """Train ``model`` on ``train_data`` with ``optimizer`` and ``loss_fn``, dispatching events to callbacks.

    Args:
        model: the ``torch.nn.Module`` to train.
        train_data: an iterable of batches, re-iterated every epoch (a ``DataLoader``, a list, ...).
            By default a batch is ``(xb, yb)``; see :class:`loopkit.loop.step.Step` for other shapes.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters (and the loss's, if it has any).
        loss_fn: called as ``loss_fn(pred, yb)``; must return a scalar tensor.
        valid_data: optional iterable of batches evaluated after each epoch's train phase, without gradients.
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

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Iterable,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        *,
        valid_data: Iterable | None = None,
        callbacks: Sequence[object] = (),
        step: Step | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        check_model(model)
        check_data(train_data, "train_data")
        if valid_data is not None:
            check_data(valid_data, "valid_data")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(pred, target), got {loss_fn!r}")
        check_optimizer(optimizer, model, loss_fn)
        if step is None:
            step = Step()
        elif not all(callable(getattr(step, m, None)) for m in ("unpack", "forward", "loss")):
            raise TypeError(f"step must be a loopkit.Step (with unpack, forward and loss methods), got {step!r}")
        callbacks = list(callbacks)
        for cb in callbacks:
            validate_callback(cb)
        check_unique_names(callbacks)

        self.device = resolve_device(device)
        if self.device is not None:
            model.to(self.device)
        self.model = model
        self.train_data = train_data
        self.valid_data = valid_data
        self.optimizer = optimizer
        # Chosen once: optimizers that re-evaluate the loss (LBFGS) get a closure, the rest a plain step().
        self._optimizer_step = self._closure_step if isinstance(optimizer, torch.optim.LBFGS) else optimizer.step
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
        self.micro_batch = 0
        self.micro_batches_per_step = 1
        self.accumulate = False
        self.skipped_steps = 0
        self._skips_in_a_row = 0
        self.error: BaseException | None = None
        self._position: tuple[int, int] | None = (0, 0)
        self._data = DataCursor(self, None)  # where the loop stands in train_data (set per fit)
        self._outside: list[torch.nn.Parameter] = []  # model parameters in no param group (set per fit)
        self._resume: dict[str, Any] | None = None
        # The run record this training belongs to, written into checkpoints (set by loopkit.runs).
        self.run: dict[str, Any] | None = None
        #: The latest finished epoch's means (``{"valid_loss": ...}``), written by Metrics, read by the monitors.
        self.metrics: dict[str, float] = {}
        check_declared_state(self.callbacks, learner_state_names(self))  # a misspelt reads/writes name fails here

        # Callbacks may validate themselves against the built learner (a scheduled attribute must exist).
        for cb in self.callbacks:
            check = getattr(cb, "check", None)
            if callable(check):
                check(self)

        # Every callback sees the learner through its own guarded view (shared state, checked writes).
        self._handlers: dict[str, Handlers] = {event: Handlers(event) for event in EVENTS}
        for cb in self.callbacks:
            view = guarded_view(self, cb)
            for event in handled_events(cb):
                self._handlers[event] += (functools.partial(getattr(cb, event), view),)
        # Validation runs the batch events unagreed: ranks may hold different numbers of valid batches, so a
        # rank's cancel there is carried to the agreed after_valid (see _level).
        self._valid_handlers = dict(self._handlers)
        for event in BATCH_EVENTS:
            if any(
                not getattr(cb, "agrees_across_ranks", False) for cb in self.callbacks if event in handled_events(cb)
            ):
                self._handlers[event] = Handlers(event, self._handlers[event], agreed=True)

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
        self.valid_every = valid_every
        self._data = DataCursor(self, valid_every)
        start_epoch = 0
        if resume_from is not None:
            start_epoch = self._begin_resume(resume_from, n_epochs, max_steps)  # checks it all before loading
        else:
            self.global_step = 0
        self.n_epochs = n_epochs
        self.max_steps = max_steps
        self._deadline = None if max_time is None else time.monotonic() + max_time
        self.n_batches = length(self.train_data) if valid_every is None else valid_every
        self.micro_batch, self.accumulate, self.skipped_steps, self._skips_in_a_row = 0, False, 0, 0
        self.micro_batches_per_step = 1  # GradientAccumulation sets its k in before_fit
        self.error = None
        h = self._handlers
        error: BaseException | None = None
        try:
            held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
            self._outside = [p for p in self.model.parameters() if id(p) not in held]
            self._zero_grad()  # gradients are zeroed after each step; start clean
            fire(h["before_fit"])
            if self._resume is not None and self._resume["position"]["batch"] == 0:
                self._finish_resume()  # saved between epochs: restore before the next before_epoch
            epochs = range(start_epoch, n_epochs) if n_epochs is not None else itertools.count(start_epoch)
            for epoch in epochs:
                if self._out_of_budget():
                    break
                self.epoch = epoch
                self._level(h["before_epoch"], self._epoch_body, h["after_epoch"], CancelEpoch)
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

    def _level(
        self,
        before: Handlers,
        body: Callable[[], None],
        after: Handlers,
        cancel: type[Exception],
        *,
        carry: bool = False,
    ) -> None:
        """The one loop primitive: before handlers, body, after handlers (also after a ``cancel``).

        ``carry`` (the valid phase): in a distributed run, an outer cancel that this rank alone raised in the
        body (its batch events are not agreed) is carried to the agreed ``after`` event, so every rank reaches
        that event and takes the cancel there together.
        """
        carried = None
        try:
            fire(before)
            body()
        except cancel:
            pass
        except Cancel as outer:
            if not (carry and after.agreed and is_distributed()) or getattr(outer, "agreed", False):
                raise
            carried = outer
        try:  # noqa: SIM105 - a try costs nothing here, contextlib.suppress a context manager per level
            fire(after, carried)
        except cancel:
            pass  # raised in the level's own after_ handlers: the level is over, there is nothing to cancel

    def _out_of_budget(self) -> bool:
        # Each rank reads its own clock, so a distributed run agrees on the deadline (any_rank: one all-reduce
        # per check, only when max_time is given); global_step is the same on every rank.
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
            self._level(h["before_train"], self._train_phase, h["after_train"], CancelPhase)
            self._data.close(stream_too=False)  # an epoch's pass ends with its train phase: its workers go
            if self.valid_data is not None:
                self.phase = "valid"
                self.model.eval()
                self._level(h["before_valid"], self._valid_phase, h["after_valid"], CancelPhase, carry=True)
        finally:
            # Whether the epoch ran out or was cancelled, after_epoch sits at the start of the next one.
            self._position = (self.epoch + 1, 0)

    def _train_phase(self) -> None:
        before, after = self._handlers["before_batch"], self._handlers["after_batch"]
        first = self._resume["position"]["batch"] if self._resume is not None else 0
        batches = self._data.epoch(first)
        if self._resume is not None:  # resumed mid-epoch: the data is back where it stood
            self._finish_resume()
        batch_idx = -1
        for batch_idx, batch in enumerate(batches, first):
            self.batch_idx = batch_idx
            self.batch = batch
            self._position = (self.epoch, batch_idx + 1)
            try:
                if before:
                    fire(before)
                self._train_batch()
            except CancelBatch as cancel:
                self._discard_window(cancel)
            except BaseException:
                self._discard_window(None)  # an outer cancel or an error: no gradient of this window survives it
                raise
            try:  # noqa: SIM105 - per batch: a try is free, contextlib.suppress is not
                fire(after)
            except CancelBatch:
                pass  # the batch is over
            if self._out_of_budget():
                break  # a normal end of the phase: after_train, validation and after_epoch follow
        if batch_idx < 0 and first == 0:
            raise ValueError(f"train_data yielded no batches in epoch {self.epoch}: {self.train_data!r}")
        if self.micro_batch:  # data without a length ended inside an accumulation window: step on what it has
            try:
                self._step()
            except CancelBatch as cancel:
                self._discard_window(cancel)

    def _train_batch(self) -> None:
        h = self._handlers
        self._forward_loss(h)
        self.backward_loss = self.loss  # what backward runs on: callbacks may weight or scale it
        if h["before_backward"]:  # no call at all for an event without handlers
            fire(h["before_backward"])
        self.backward_loss.backward()  # type: ignore[union-attr]  # _forward_loss set the loss
        if h["after_backward"]:
            fire(h["after_backward"])
        if self.accumulate:  # the window goes on: its gradients wait for its last micro-batch
            self.micro_batch += 1
            return
        self._step()

    def _step(self) -> None:
        """The step level: before_step, the optimizer step, gradients zeroed, after_step (only if it happened)."""
        h = self._handlers
        self.step_loss = self.loss  # the loss of this step; GradientAccumulation sets the window's mean
        if h["before_step"]:
            fire(h["before_step"])
        self._optimizer_step()
        self.optimizer.zero_grad(set_to_none=True)  # _zero_grad, inlined: one call fewer a step
        for p in self._outside:
            p.grad = None
        self.global_step += 1
        self.micro_batch = self._skips_in_a_row = 0
        try:
            fire(h["after_step"])
        except CancelStep as cancel:
            raise RuntimeError(
                f"{type(cancel).__name__} was raised in after_step, after the optimizer step was applied; raise "
                "it in before_step (or earlier) to skip a step"
            ) from cancel

    def _zero_grad(self) -> None:
        """Clear the gradients of the optimizer's parameters and of the model's parameters outside it, which
        ``optimizer.zero_grad`` would leave to pile up step after step (a backbone added to the optimizer later)."""
        self.optimizer.zero_grad(set_to_none=True)
        for p in self._outside:
            p.grad = None

    def _discard_window(self, cancel: CancelBatch | None) -> None:
        """A cancelled train batch: drop its accumulation window's gradients so none reaches a later step."""
        self._zero_grad()
        self.micro_batch = 0
        if isinstance(cancel, CancelStep):
            self.skipped_steps += 1
            self._skips_in_a_row += 1
            if self._skips_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise RuntimeError(
                    f"{MAX_SKIPPED_IN_A_ROW} optimizer steps in a row were skipped (the last at epoch {self.epoch}, "
                    f"batch {self.batch_idx}, global step {self.global_step}): the run has diverged (a loss "
                    "scaler skips steps whose gradients are not finite); lower the learning rate or check the data"
                ) from cancel

    def _closure_step(self) -> None:
        """``optimizer.step(closure)`` for optimizers that evaluate the loss several times per step."""
        step = self.step_logic

        def closure() -> torch.Tensor:
            self._zero_grad()
            self.pred = step.forward(self)
            loss = step.loss(self)
            loss.backward()
            return loss

        self.optimizer.step(closure)  # type: ignore[arg-type]  # torch types the closure as returning float; LBFGS takes the loss tensor

    def _valid_phase(self) -> None:
        self._position = None  # a checkpoint taken mid-validation could not be resumed exactly
        h = self._valid_handlers
        before, after = h["before_batch"], h["after_batch"]
        body = functools.partial(self._forward_loss, h)
        with torch.no_grad():
            for batch_idx, batch in enumerate(self.valid_data):  # type: ignore[arg-type]  # fit runs this phase only with valid_data
                self.batch_idx = batch_idx
                self.batch = batch
                self._level(before, body, after, CancelBatch)

    def _forward_loss(self, h: dict[str, Handlers]) -> None:
        """The part of a batch both phases share: unpack, forward, after_pred, loss, after_loss (``h``: the
        phase's handlers)."""
        step = self.step_logic
        self.xb, self.yb = step.unpack(self, self.batch)
        self.pred = step.forward(self)
        if h["after_pred"]:
            fire(h["after_pred"])
        self.loss = step.loss(self)
        if h["after_loss"]:
            fire(h["after_loss"])

    # ----------------------------------------------------------------------------------------- evaluating
    def validate(self, data: Iterable | None = None) -> dict[str, float]:
        """Evaluate on ``data`` (default ``valid_data``) without training: the valid phase's events run.

        Returns ``{"valid_loss": sample-weighted mean loss, ...}`` plus every ``valid_*`` mean a Metrics
        callback computed. Same step, device and precision callbacks as training; see
        :mod:`loopkit.loop.evaluation`.
        """
        if data is None:
            if self.valid_data is None:
                raise TypeError(
                    "validate() has no data: this Learner was built without valid_data; pass the batches to "
                    "evaluate, learner.validate(data), or build the Learner with valid_data=..."
                )
            data = self.valid_data
        check_data(data, "data")
        return evaluation.validate(self, data)

    def predict(self, data: Iterable) -> Any:
        """The model's predictions for ``data`` (batches as in ``train_data``, or inputs alone).

        Returns the predictions concatenated along dimension 0 when they are tensors, else a list of them.
        """
        check_data(data, "data")
        return evaluation.predict(self, data)

    # ----------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: model, optimizer, callbacks, RNG, loop position.

        Valid in the train phase's events and at ``after_epoch`` (the points a checkpoint can be resumed
        from); raises ``RuntimeError`` during validation.
        """
        if self.micro_batch:
            raise RuntimeError(
                f"a checkpoint can be taken only at an accumulation window's boundary (after its step), not after "
                f"micro-batch {self.micro_batch} of a window; save from after_batch when learner.micro_batch == 0"
            )
        if self._position is None:
            raise RuntimeError(
                "a checkpoint can be taken during the train phase or at after_epoch, not during validation "
                "(it could not be resumed exactly); save from after_batch in train or from after_epoch"
            )
        return build_state(self, *self._position)

    def _begin_resume(self, resume_from: str | os.PathLike | dict, n_epochs: int | None, max_steps: int | None) -> int:
        """Verify and check the whole checkpoint, then load model and optimizer; callbacks and RNG follow later."""
        if isinstance(resume_from, dict):
            state, source = resume_from, "the checkpoint state passed to fit"
        else:
            state, source = load_checkpoint(resume_from), repr(os.fspath(resume_from))
        rank, world_size = rank_and_world_size()
        before = self.n_epochs, self.n_batches, self.max_steps
        # What callbacks check the checkpoint against: this fit's length.
        self.n_epochs, self.n_batches, self.max_steps = n_epochs, self._data.epoch_length(), max_steps
        try:
            check_fits(
                state,
                self,
                source,
                n_epochs=n_epochs,
                max_steps=max_steps,
                valid_every=self._data.per_epoch,
                rank=rank,
                world_size=world_size,
            )
        finally:
            self.n_epochs, self.n_batches, self.max_steps = before
        position = state["position"]
        load_model_and_optimizer(state, self)
        self.global_step = position["global_step"]
        self._position = (position["epoch"], position["batch"])
        self._resume = state
        saved_length = resumed_epoch_length(state) if self._data.per_epoch is None else None
        self._data.resume(
            rng_of_this_rank(state)["phase_start"],
            data_of_this_rank(state),
            saved_length,
            check=replaces_train_data(self),  # the data checks wait for the data the fit uses
        )
        return position["epoch"]

    def _finish_resume(self) -> None:
        """Restore callback states, the optimizer's options and the RNG at the point in the loop where they were
        saved (after the resumed epoch's ``before_epoch``/``before_train``, whose writes they replace)."""
        resume, self._resume = self._resume, None
        if resume is None:  # not resuming: nothing to restore
            return
        states = resume["callbacks"]
        for cb in self.callbacks:
            name = callback_name(cb)
            if name in states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(states[name])
        restore_group_options(resume["optimizer"], self.optimizer)  # a per-epoch schedule wrote them again
        restore_rng_state(rng_of_this_rank(resume)["now"])

    # ----------------------------------------------------------------------------------------- inspecting
    @property
    def position(self) -> tuple[int, int] | None:
        """``(epoch, batches done in its train phase)``: where a run resumed from here would continue.

        ``None`` during validation, where a checkpoint could not be resumed exactly.
        """
        return self._position

    def describe(self) -> str:
        """Return, for each event that has handlers, the callbacks that run there, in order.

        Example:
            >>> import torch
            >>> class Log:
            ...     reads = ("loss",)
            ...     def after_loss(self, learner): ...
            ...     def after_fit(self, learner): ...
            >>> model = torch.nn.Linear(1, 1)
            >>> learner = Learner(model, [(torch.ones(1, 1), torch.ones(1, 1))],
            ...                   torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
            ...                   callbacks=[Log()])
            >>> print(learner.describe())
            after_loss: Log
            after_fit: Log
        """
        lines = []
        for event in EVENTS:
            names = [callback_name(h.func.__self__) for h in self._handlers[event]]
            if names:
                lines.append(f"{event}: {' -> '.join(names)}")
        return "\n".join(lines) if lines else "(no callbacks)"

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
