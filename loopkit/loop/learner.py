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
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .callback import callback_name, handled_events, validate_callback
from .checkpoint import load_checkpoint
from .events import EVENTS, CancelBatch, CancelEpoch, CancelFit, CancelPhase
from .guard import guarded_view
from .ordering import order_callbacks
from .rng import capture_rng_state, restore_rng_state
from .step import Step


class Learner:
    """Train ``model`` on ``train_data`` with ``optimizer`` and ``loss_fn``, dispatching events to callbacks.

    Args:
        model: the ``torch.nn.Module`` to train.
        train_data: an iterable of batches, re-iterated every epoch (a ``DataLoader``, a list, ...).
            By default a batch is ``(xb, yb)``; see :class:`loopkit.step.Step` for other shapes.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters (and the loss's, if it has any).
        loss_fn: called as ``loss_fn(pred, yb)``; must return a scalar tensor.
        valid_data: optional iterable of batches evaluated after each epoch's train phase, without gradients.
        callbacks: callback instances; their run order is derived from their declarations
            (see :mod:`loopkit.ordering`), not from this list, except among callbacks left unordered.
        step: a :class:`loopkit.step.Step` that customises unpacking, forward and loss.
        device: if given, the model is moved there and every batch is moved there by the default step.

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
        _check_model(model)
        _check_data(train_data, "train_data")
        if valid_data is not None:
            _check_data(valid_data, "valid_data")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(pred, target), got {loss_fn!r}")
        _check_optimizer(optimizer, model, loss_fn)
        if step is None:
            step = Step()
        elif not all(callable(getattr(step, m, None)) for m in ("unpack", "forward", "loss")):
            raise TypeError(f"step must be a loopkit.Step (with unpack, forward and loss methods), got {step!r}")
        callbacks = list(callbacks)
        for cb in callbacks:
            validate_callback(cb)
        _check_unique_names(callbacks)

        self.device = torch.device(device) if device is not None else None
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
        self.n_epochs = 0
        self.epoch = 0
        self.phase: str | None = None
        self.batch_idx = 0
        self.n_batches: int | None = _length(train_data)
        self.global_step = 0
        self.batch: Any = None
        self.xb: Any = None
        self.yb: Any = None
        self.pred: Any = None
        self.loss: torch.Tensor | None = None
        self.error: BaseException | None = None
        self._position: tuple[int, int] | None = (0, 0)
        self._rng_at_phase_start: dict[str, Any] | None = None
        self._resume: dict[str, Any] | None = None

        # Callbacks may validate themselves against the built learner (a scheduled attribute must exist).
        for cb in self.callbacks:
            check = getattr(cb, "check", None)
            if callable(check):
                check(self)

        # Every callback sees the learner through its own guarded view (shared state, checked writes).
        self._handlers: dict[str, tuple] = dict.fromkeys(EVENTS, ())
        for cb in self.callbacks:
            view = guarded_view(self, cb)
            for event in handled_events(cb):
                self._handlers[event] += (functools.partial(getattr(cb, event), view),)

    # ----------------------------------------------------------------------------------------- running
    def fit(self, n_epochs: int, *, resume_from: str | os.PathLike | dict | None = None) -> Learner:
        """Train for ``n_epochs`` epochs (each a train phase, then a valid phase if there is valid data).

        Args:
            n_epochs: total number of epochs of the run, a positive int. When resuming, the total of the
                whole run, not the number still to go.
            resume_from: a checkpoint path (or a loaded ``state_dict``) to continue from: model, optimizer,
                callback states, RNG states and the position in the loop are restored, so the run continues
                exactly as if it had never stopped.

        Returns:
            the learner, for chaining.
        """
        if isinstance(n_epochs, bool) or not isinstance(n_epochs, int):
            raise TypeError(f"fit(n_epochs) needs an int number of epochs, got {n_epochs!r}")
        if n_epochs < 1:
            raise ValueError(f"fit(n_epochs) needs at least 1 epoch, got n_epochs={n_epochs}")
        start_epoch = 0
        self.global_step = 0
        if resume_from is not None:
            state = resume_from if isinstance(resume_from, dict) else load_checkpoint(resume_from)
            start_epoch = self._begin_resume(state, n_epochs)
        self.n_epochs = n_epochs
        self.n_batches = _length(self.train_data)
        self.error = None
        h = self._handlers
        try:
            try:
                for handler in h["before_fit"]:
                    handler()
                if self._resume is not None and self._resume["position"]["batch"] == 0:
                    self._finish_resume()  # saved between epochs: restore before the next before_epoch
                for epoch in range(start_epoch, n_epochs):
                    self.epoch = epoch
                    self._level(h["before_epoch"], self._epoch_body, h["after_epoch"], CancelEpoch)
            except CancelFit:
                pass
        except BaseException as error:
            self.error = error
            raise
        finally:
            self._resume = None
            for handler in h["after_fit"]:
                handler()
            self.error = None
        return self

    def _level(self, before: tuple, body: Callable[[], None], after: tuple, cancel: type[Exception]) -> None:
        """The one loop primitive: before handlers, body, after handlers (also after a ``cancel``)."""
        try:
            for handler in before:
                handler()
            body()
        except cancel:
            pass
        for handler in after:
            handler()

    def _epoch_body(self) -> None:
        h = self._handlers
        # Read after before_epoch, where a per-epoch schedule may have changed the batch size, and before
        # before_train, where per-step schedules lay out the phase.
        self.n_batches = _length(self.train_data)
        try:
            self._level(h["before_train"], self._train_phase, h["after_train"], CancelPhase)
            if self.valid_data is not None:
                self._level(h["before_valid"], self._valid_phase, h["after_valid"], CancelPhase)
        finally:
            # Whether the epoch ran out or was cancelled, after_epoch sits at the start of the next one.
            self._position = (self.epoch + 1, 0)

    def _train_phase(self) -> None:
        self.phase = "train"
        self.model.train()
        h = self._handlers
        before, after = h["before_batch"], h["after_batch"]
        body = self._train_batch
        self._rng_at_phase_start = capture_rng_state()
        batches, first = self._iterate(self.train_data)
        batch_idx = -1
        for batch_idx, batch in enumerate(batches, first):
            self.batch_idx = batch_idx
            self.batch = batch
            self._position = (self.epoch, batch_idx + 1)
            self._level(before, body, after, CancelBatch)
        if batch_idx < 0 and first == 0:
            raise ValueError(f"train_data yielded no batches in epoch {self.epoch}: {self.train_data!r}")

    def _train_batch(self) -> None:
        h = self._handlers
        self._forward_loss()
        # Zeroing just before backward (not after the step) keeps a cancelled batch from leaking gradients.
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()  # type: ignore[union-attr]  # _forward_loss set it (after_loss may replace it)
        for handler in h["after_backward"]:
            handler()
        for handler in h["before_step"]:
            handler()
        self._optimizer_step()
        self.global_step += 1
        for handler in h["after_step"]:
            handler()

    def _closure_step(self) -> None:
        """``optimizer.step(closure)`` for optimizers that evaluate the loss several times per step."""
        step = self.step_logic

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            self.pred = step.forward(self)
            loss = step.loss(self)
            loss.backward()
            return loss

        self.optimizer.step(closure)  # type: ignore[arg-type]  # torch types the closure as returning float; LBFGS takes the loss tensor

    def _valid_phase(self) -> None:
        self.phase = "valid"
        self._position = None  # a checkpoint taken mid-validation could not be resumed exactly
        self.model.eval()
        h = self._handlers
        before, after = h["before_batch"], h["after_batch"]
        body = self._forward_loss
        with torch.no_grad():
            for batch_idx, batch in enumerate(self.valid_data):  # type: ignore[arg-type]  # fit runs this phase only with valid_data
                self.batch_idx = batch_idx
                self.batch = batch
                self._level(before, body, after, CancelBatch)

    def _forward_loss(self) -> None:
        """The part of a batch both phases share: unpack, forward, after_pred, loss, after_loss."""
        h = self._handlers
        step = self.step_logic
        self.xb, self.yb = step.unpack(self, self.batch)
        self.pred = step.forward(self)
        for handler in h["after_pred"]:
            handler()
        self.loss = step.loss(self)
        for handler in h["after_loss"]:
            handler()

    # ----------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly: model, optimizer, callbacks, RNG, loop position.

        Valid in the train phase's events and at ``after_epoch`` (the points a checkpoint can be resumed
        from); raises ``RuntimeError`` during validation.
        """
        if self._position is None:
            raise RuntimeError(
                "a checkpoint can be taken during the train phase or at after_epoch, not during validation "
                "(it could not be resumed exactly); save from after_batch in train or from after_epoch"
            )
        epoch, batch = self._position
        return {
            "format": "loopkit-checkpoint-1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": {callback_name(cb): cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")},
            "position": {"epoch": epoch, "batch": batch, "global_step": self.global_step, "n_epochs": self.n_epochs},
            "rng": capture_rng_state(),
            "rng_at_phase_start": self._rng_at_phase_start if batch > 0 else None,
        }

    def _begin_resume(self, state: dict[str, Any], n_epochs: int) -> int:
        if state.get("format") != "loopkit-checkpoint-1":
            raise ValueError(f"not a loopkit checkpoint (format={state.get('format')!r}); write one with Checkpoint")
        position = state["position"]
        if position["epoch"] > n_epochs:
            raise ValueError(
                f"the checkpoint is at epoch {position['epoch']} but fit was asked for n_epochs={n_epochs}; "
                "n_epochs is the total of the whole run, so pass at least the checkpoint's epoch"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step = position["global_step"]
        self._position = (position["epoch"], position["batch"])
        self._resume = state
        return position["epoch"]

    def _iterate(self, data: Iterable) -> tuple[Iterable, int]:
        """Start an epoch's iterator; when resuming mid-epoch, replay the shuffle and skip finished batches."""
        resume = self._resume
        if resume is None or resume["position"]["batch"] == 0:
            return iter(data), 0
        # The loader drew its shuffle from the RNG when iter() was called; replay that draw exactly.
        restore_rng_state(resume["rng_at_phase_start"])
        self._rng_at_phase_start = resume["rng_at_phase_start"]
        iterator = iter(data)
        done = resume["position"]["batch"]
        for _ in range(done):
            self.batch = next(iterator)
        self._finish_resume()
        return iterator, done

    def _finish_resume(self) -> None:
        """Restore callback states and the RNG at the point in the loop where they were saved."""
        resume, self._resume = self._resume, None
        if resume is None:  # not resuming: nothing to restore
            return
        states = resume["callbacks"]
        for cb in self.callbacks:
            name = callback_name(cb)
            if name in states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(states[name])
        restore_rng_state(resume["rng"])

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


def _length(data: Iterable) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_model(model: object) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}: {model!r}")


def _check_data(data: object, name: str) -> None:
    if data is None or isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader, a list, ...), got {data!r}")
    length = _length(data)
    if length == 0:
        raise ValueError(f"{name} is empty ({data!r} has length 0); pass data with at least one batch")


def _check_optimizer(optimizer: object, model: torch.nn.Module, loss_fn: object) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}: {optimizer!r}")
    owned = {id(p) for p in model.parameters()}
    if isinstance(loss_fn, torch.nn.Module):
        owned |= {id(p) for p in loss_fn.parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = [tuple(p.shape) for p in params if id(p) not in owned]
    if foreign or not params:
        raise ValueError(
            f"the optimizer {type(optimizer).__name__} does not own this model's parameters "
            f"({len(foreign)} of its {len(params)} parameters, shapes {foreign[:3]}, are not the model's); "
            "build it from model.parameters() of this model"
        )


def _check_unique_names(callbacks: list[object]) -> None:
    seen: set[str] = set()
    for cb in callbacks:
        name = callback_name(cb)
        if name in seen:
            raise ValueError(
                f"two callbacks are named {name!r}; checkpoints and describe() key callbacks by name, so give "
                "one of them a distinct name (e.g. Scheduler(..., name='EpochScheduler')) or subclass it"
            )
        seen.add(name)
