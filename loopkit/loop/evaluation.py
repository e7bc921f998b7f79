"""Evaluation without training: ``Learner.validate(data)`` and ``Learner.predict(data)``.

Both run under the learner's settings (its ``Step``, device and callbacks: a ``MixedPrecision`` callback
autocasts here too), in eval mode and under ``torch.no_grad()``, and restore the model's modes afterwards.

- **Evaluation sets.** ``valid_data`` is one iterable of batches (evaluated as phase ``"valid"``) or a mapping
  of named sets, ``{"valid": val_loader, "train_estimate": some_train_batches}``: each epoch's valid phase then
  evaluates every set in turn, in the mapping's order, as phase ``name`` with its own ``before_valid`` and
  ``after_valid``, so Metrics names its means ``valid_loss``, ``train_estimate_loss``, ... and a monitor may
  watch any of them. :func:`evaluation_sets` checks the names.
- ``validate`` runs the valid phase's events (``before_valid``, per batch ``before_batch``, ``after_pred``,
  ``after_loss``, ``after_batch``, then ``after_valid``), so Metrics and loggers see it as a validation; it
  returns the sample-weighted mean loss as ``"valid_loss"`` plus every ``valid_*`` value a Metrics callback
  computed. ``validate(data, name="test")`` runs it as phase ``"test"`` (``learner.phase``), so the results
  and Metrics' means are named ``test_loss``, ``test_<metric>``.
- ``predict`` fires ``before_batch``, ``after_pred`` and ``after_batch`` per batch with
  ``learner.phase == "predict"`` (there is no loss: batches may be inputs alone) and returns the predictions,
  concatenated along the first dimension when they are tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .checks import check_data
from .dispatch import fire, run_level
from .events import CancelBatch, CancelPhase


def batch_size(learner: Any) -> int:
    """The number of samples in the current batch: the first dimension of the target (or the input)."""
    for value in (learner.yb, learner.xb):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def check_set_name(name: object, where: str) -> str:
    """``name`` as the name of an evaluation phase: an identifier other than ``train`` and ``predict`` (the
    other phases), which prefixes its metrics' keys.

    Raises:
        ValueError: any other name (``where`` says which argument gave it).
    """
    if not isinstance(name, str) or not name.isidentifier() or name in ("train", "predict"):
        raise ValueError(
            f"{where} needs a name for the results' keys (an identifier such as 'valid' or 'test'), not "
            f"{name!r} ('train' and 'predict' are the other phases' names)"
        )
    return name


def evaluation_sets(valid_data: object) -> list[tuple[str, Iterable]]:
    """``valid_data`` as ``[(phase name, batches), ...]``: ``[]`` for None, ``[("valid", data)]`` for one
    iterable, the items of a mapping of named sets in order.

    Raises:
        TypeError: a set that is not an iterable of batches.
        ValueError: an empty mapping, a set name that is not an identifier (or is ``train``/``predict``), an empty
            set.
    """
    if valid_data is None:
        return []
    if not isinstance(valid_data, Mapping):
        check_data(valid_data, "valid_data")
        return [("valid", valid_data)]  # type: ignore[list-item]  # check_data passed
    if not valid_data:
        raise ValueError("valid_data is an empty mapping; give one or more named sets, {'valid': loader}, or None")
    for name, data in valid_data.items():
        check_set_name(name, f"valid_data[{name!r}]")
        check_data(data, f"valid_data[{name!r}]")
    return list(valid_data.items())


def validate(learner: Any, data: Iterable | None, name: str | None = None) -> dict[str, float]:
    """Run the valid phase on ``data`` as phase ``name`` (default ``"valid"``); ``data=None``: every set of the
    learner's ``valid_data`` under its own name (``name`` must then be left out). See the module docstring."""
    if data is None:
        if learner.valid_data is None:
            raise TypeError(
                "validate() has no data: this Learner was built without valid_data; pass the batches to "
                "evaluate, learner.validate(data), or build the Learner with valid_data=..."
            )
        sets = evaluation_sets(learner.valid_data)
        if name is not None and len(sets) > 1:
            raise ValueError(
                f"validate(name={name!r}) without data would evaluate {len(sets)} named sets; pass the data to "
                f"name, or leave name out to evaluate {[n for n, _ in sets]} under their own names"
            )
        results: dict[str, float] = {}
        for set_name, set_data in sets:
            results.update(_validate_one(learner, set_data, name or set_name))
        return results
    check_data(data, "data")
    return _validate_one(learner, data, check_set_name("valid" if name is None else name, f"validate(name={name!r})"))


def _validate_one(learner: Any, data: Iterable, name: str) -> dict[str, float]:
    h = learner._valid_handlers
    total = torch.zeros((), dtype=torch.float64)
    count = 0

    def batch_body() -> None:
        nonlocal total, count
        learner._forward_loss(h)
        n = batch_size(learner)
        total = total.to(learner.loss.device) + learner.loss.detach().to(torch.float64) * n
        count += n

    def body() -> None:
        for batch_idx, batch in enumerate(data):
            learner.batch_idx, learner.batch = batch_idx, batch
            run_level(h["before_batch"], batch_body, h["after_batch"], CancelBatch)

    with _evaluating(learner, name):
        run_level(h["before_valid"], body, h["after_valid"], CancelPhase, carry=True)
    result = {f"{name}_loss": total.item() / count if count else float("nan")}
    for cb in learner.callbacks:  # a Metrics callback's means of this phase
        latest = getattr(cb, "latest_phase", None)
        if isinstance(latest, dict):
            result.update({k: v for k, v in latest.items() if k.startswith(f"{name}_")})
    return result


def predict(learner: Any, data: Iterable) -> Any:
    """The model's predictions for every batch of ``data``; see the module docstring."""
    h = learner._valid_handlers
    step = learner.step_logic
    preds: list[Any] = []

    def batch_body() -> None:
        batch = learner.batch
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            learner.xb, learner.yb = step.unpack(learner, batch)
        else:  # inputs alone
            learner.xb, learner.yb = step.unpack(learner, (batch, None))
        autocast = learner.autocast
        if autocast is None:
            learner.pred = step.forward(learner)
            fire(h["after_pred"])
        else:
            with autocast:
                learner.pred = step.forward(learner)
                fire(h["after_pred"])
        preds.append(learner.pred)

    with _evaluating(learner, "predict"):
        for batch_idx, batch in enumerate(data):
            learner.batch_idx, learner.batch = batch_idx, batch
            run_level(h["before_batch"], batch_body, h["after_batch"], CancelBatch)
    if preds and all(isinstance(p, torch.Tensor) for p in preds):
        return torch.cat([p if p.dim() else p.reshape(1) for p in preds])
    return preds


class _evaluating:
    """Eval mode and no_grad for the duration; restores modes, phase and position after."""

    def __init__(self, learner: Any, phase: str) -> None:
        self.learner, self.phase = learner, phase

    def __enter__(self) -> None:
        learner = self.learner
        self.modes = [(m, m.training) for m in learner.model.modules()]
        self.saved = (learner.phase, learner._position)
        learner.phase, learner._position = self.phase, None
        learner.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(None, None, None)
        for module, training in self.modes:
            module.training = training
        self.learner.phase, self.learner._position = self.saved
