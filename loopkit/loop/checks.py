"""The checks a Learner makes on its arguments and on fit's, each failing early with the value and the fix."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch

from .callback import callback_name, validate_callback
from .events import Cancel


def length(data: Iterable) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_model(model: object) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}: {model!r}")


def check_data(data: object, name: str) -> None:
    if data is None or isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader, a list, ...), got {data!r}")
    n = length(data)
    if n == 0:
        raise ValueError(f"{name} is empty ({data!r} has length 0); pass data with at least one batch")


def check_optimizer(optimizer: object, model: torch.nn.Module, loss_fn: object) -> None:
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


def check_unique_names(callbacks: list[object]) -> None:
    seen: set[str] = set()
    for cb in callbacks:
        name = callback_name(cb)
        if name in seen:
            raise ValueError(
                f"two callbacks are named {name!r}; checkpoints and describe() key callbacks by name, so give "
                "one of them a distinct name (e.g. Scheduler(..., name='EpochScheduler')) or subclass it"
            )
        seen.add(name)


def is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, Cancel)


def misplaced(cancel: Cancel) -> RuntimeError:
    where = getattr(cancel, "event", "an event")
    error = RuntimeError(
        f"{type(cancel).__name__} was raised in {where}, where no {type(cancel).__name__[6:].lower()} is running; "
        "raise it inside that level (see docs/events.md), or raise the cancel of a level that is running there"
    )
    error.__cause__ = cancel
    return error


def check_count(name: str, value: object) -> None:
    """A whole-number argument of ``fit`` (``valid_every``): an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"fit({name}) needs an int number of batches, got {name}={value!r}")
    if value < 1:
        raise ValueError(f"fit({name}) needs at least 1, got {name}={value}")


def check_budgets(n_epochs: object, max_steps: object, max_time: object) -> None:
    for name, value in (("n_epochs", n_epochs), ("max_steps", max_steps)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            unit = "epochs" if name == "n_epochs" else "steps"
            raise TypeError(f"fit({name}) needs an int number of {unit}, got {name}={value!r}")
        if value < 1:
            raise ValueError(f"fit({name}) needs at least 1, got {name}={value}")
    if max_time is not None and (
        isinstance(max_time, bool) or not isinstance(max_time, (int, float)) or not 0 < max_time < float("inf")
    ):
        raise ValueError(f"fit(max_time) needs a positive, finite number of seconds, got max_time={max_time!r}")
    if n_epochs is None and max_steps is None:
        raise TypeError(
            "fit() needs n_epochs, max_steps or both (whichever comes first ends the fit), e.g. fit(10) or "
            "fit(max_steps=500)"
        )


def check_arguments(
    model: object,
    train_data: object,
    optimizer: object,
    loss_fn: object,
    custom_step: object,
    callbacks: Iterable[object],
) -> None:
    """The Learner's arguments, each checked before anything is built; see ``Learner``'s Raises (``valid_data``
    is checked by :func:`loopkit.loop.evaluation.evaluation_sets`)."""
    check_model(model)
    check_data(train_data, "train_data")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(pred, target), or None for a model that computes its own loss, "
            f"got {loss_fn!r}"
        )
    if loss_fn is None and custom_step is None and not _takes_targets(model):
        raise TypeError(
            f"no loss_fn was given, so the model must compute its own loss as model(xb, yb), but "
            f"{type(model).__name__}.forward takes one input; pass a loss_fn (torch.nn.functional.mse_loss, ...)"
        )
    check_optimizer(optimizer, model, loss_fn)  # type: ignore[arg-type]  # check_model passed
    if custom_step is not None and not all(
        callable(getattr(custom_step, m, None)) for m in ("unpack", "forward", "loss")
    ):
        raise TypeError(f"step must be a loopkit.Step (with unpack, forward and loss methods), got {custom_step!r}")
    callbacks = list(callbacks)
    for cb in callbacks:
        validate_callback(cb)
    check_unique_names(callbacks)


def _takes_targets(model: object) -> bool:
    """Whether ``model(xb, yb)`` binds: its forward takes a second positional argument (or ``*args``)."""
    try:
        signature = inspect.signature(model.forward)  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True
