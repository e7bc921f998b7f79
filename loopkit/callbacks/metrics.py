"""Metrics: the loss and user metrics, averaged per phase and epoch, weighted by batch size.

Sums are accumulated on the device as one tensor; the host reads them once per phase (one ``tolist()``),
so tracking metrics costs no host sync per step. In a distributed run the sums and the sample count are
all-reduced once per phase (one collective), so every rank reports the same global means, each sample weighted
once whatever the ranks' batch sizes.

Example:
    >>> import torch
    >>> from loopkit import Learner
    >>> model = torch.nn.Linear(2, 3)
    >>> data = [(torch.randn(8, 2), torch.randint(0, 3, (8,)))] * 3
    >>> metrics = Metrics(accuracy)
    >>> _ = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy,
    ...             valid_data=data[:1], callbacks=[metrics]).fit(2)
    >>> sorted(metrics.history[-1])
    ['epoch', 'train_accuracy', 'train_loss', 'valid_accuracy', 'valid_loss']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..distributed import all_gather, all_reduce_sum, is_distributed, rank, world_size
from ..distributed.collectives import collective_device
from ..loop.callback import Callback
from ..scheduling.scheduler import Scheduler


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose highest-scoring class is the target class.

    Args:
        pred: class scores (logits or probabilities), shape ``(N, C)`` (or ``(..., C)``).
        target: class indices, shape ``(N,)`` (or the leading shape of ``pred``), integer dtype.

    Returns:
        a 0-dim float tensor in [0, 1], on ``pred``'s device (no host sync).
    """
    return (pred.argmax(dim=-1) == target).float().mean()


def batch_size(learner: Any) -> int:
    """The number of samples in the current batch: the first dimension of the target (or the input)."""
    for value in (learner.yb, learner.xb):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


class Metrics(Callback):
    """Track ``loss`` and each metric per phase and epoch; read them in :attr:`history` after ``fit``.

    Args:
        *fns: metric functions ``fn(pred, target) -> scalar tensor``, averages over the batch (as a loss is).
        names: names for the metrics; default each function's ``__name__``.

    Raises:
        TypeError: a metric that is not callable.
        ValueError: names that are not one distinct name per function, or a name ``"loss"``.

    Attributes:
        history: one dict per finished epoch: ``{"epoch": 0, "train_loss": ..., "valid_loss": ...,
            "train_<metric>": ..., "valid_<metric>": ...}``.
        hyperparams: the per-step values every Scheduler applied, by hyperparameter name (the Schedulers'
            own history lists, not copies).
    """

    reads = ("loss", "pred", "yb", "xb", "phase", "epoch", "callbacks")

    def __init__(self, *fns: Callable[[Any, Any], torch.Tensor], names: list[str] | None = None) -> None:
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"Metrics takes functions fn(pred, target) -> tensor, got {fn!r}")
        names = list(names) if names is not None else [getattr(fn, "__name__", type(fn).__name__) for fn in fns]
        if len(names) != len(fns) or len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"Metrics needs one distinct name per function (not 'loss'), got names={names!r}")
        self.fns = fns
        self.names = ["loss", *names]
        self.history: list[dict[str, float]] = []
        self.hyperparams: dict[str, list[float]] = {}
        self._row: dict[str, float] = {}
        self._sums: torch.Tensor | None = None
        self._count = 0

    def before_fit(self, learner: Any) -> None:
        self.history = []
        self.hyperparams = {}
        for cb in learner.callbacks:
            if isinstance(cb, Scheduler):
                self.hyperparams.update(cb.history)

    def before_epoch(self, learner: Any) -> None:
        self._row = {"epoch": learner.epoch}

    def before_train(self, learner: Any) -> None:
        self._sums, self._count = None, 0

    before_valid = before_train

    def after_loss(self, learner: Any) -> None:
        n = batch_size(learner)
        with torch.no_grad():
            values = [learner.loss.detach()] + [fn(learner.pred, learner.yb).detach() for fn in self.fns]
            batch = torch.stack([v.to(torch.float64) for v in values]) * n
        # A state restored from a checkpoint lives on the CPU; follow the batch to its device once.
        self._sums = batch if self._sums is None else self._sums.to(batch.device) + batch
        self._count += n

    def after_train(self, learner: Any) -> None:
        if is_distributed() and world_size() > 1:
            # One all-reduce of [sums..., count] per phase, on every rank (a rank without batches adds zeros),
            # so every rank reports the global sample-weighted means.
            sums = self._sums if self._sums is not None else torch.zeros(len(self.names), dtype=torch.float64)
            totals = all_reduce_sum(torch.cat([sums, sums.new_tensor([self._count])]).to(collective_device()))
            *sums_list, count = totals.tolist()  # the one host read of this phase
            if count > 0:
                self._row.update({f"{learner.phase}_{n}": value / count for n, value in zip(self.names, sums_list)})
        elif self._sums is not None:
            means = (self._sums / self._count).tolist()  # the one host read of this phase
            self._row.update({f"{learner.phase}_{name}": value for name, value in zip(self.names, means)})

    after_valid = after_train

    def after_epoch(self, learner: Any) -> None:
        self.history.append(dict(self._row))

    def state_dict(self) -> dict[str, Any]:
        # A phase's partial sums are each rank's own: every rank's are kept, as a list indexed by rank (a
        # collective in a distributed run; checkpoints are taken on every rank); the history is the same on all.
        partial = (None if self._sums is None else self._sums.detach().cpu(), self._count)
        return {
            "history": [dict(r) for r in self.history],
            "row": dict(self._row),
            "partial": all_gather(partial),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]
        self._row = dict(state["row"])
        partial = state["partial"]
        # Mid-phase a checkpoint resumes only at its own world size (the checkpoint refuses otherwise); between
        # phases every rank's sums are empty, whatever the world size.
        self._sums, self._count = partial[rank()] if rank() < len(partial) else (None, 0)

    def latest(self, key: str) -> float:
        """The most recent epoch's value of ``key`` (``"valid_loss"``, ...); ``KeyError`` lists the keys."""
        if not self.history or key not in self.history[-1]:
            known = sorted(self.history[-1]) if self.history else []
            raise KeyError(f"no metric {key!r} after this epoch; known: {known}")
        return self.history[-1][key]
