"""Metrics: the loss and user metrics, averaged per phase and epoch, weighted by batch size.

Per step, Metrics only keeps references: the detached loss (and each metric's value) and the batch size are
appended to lists. Every :data:`FLUSH_EVERY` batches and at the end of a phase the lists are folded into one
float64 tensor of sums on the device (a stack and a matrix-vector product per metric), and the host reads the
phase's means once (one ``tolist()``). So tracking metrics costs no host sync per step and, on a CPU, about a
microsecond of Python per step instead of five tensor operations. In a distributed run the sums and the sample
count are all-reduced once per phase (one collective, in :meth:`Metrics._reduce`), so every rank reports the
same global means, each sample weighted once whatever the ranks' batch sizes.

Train losses count only for steps that happened: the values of a batch whose step was cancelled (a
``CancelStep``, a loss scaler's skip, a ``CancelBatch``) are dropped with its accumulation window, so
``train_loss`` is the mean over the samples the optimizer actually stepped on.

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
from ..loop.evaluation import batch_size
from ..scheduling.scheduler import Scheduler
from .validate_first import first_evaluation


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose highest-scoring class is the target class.

    Args:
        pred: class scores (logits or probabilities), shape ``(N, C)`` (or ``(..., C)``).
        target: class indices, shape ``(N,)`` (or the leading shape of ``pred``), integer dtype.

    Returns:
        a 0-dim float tensor in [0, 1], on ``pred``'s device (no host sync).
    """
    return (pred.argmax(dim=-1) == target).float().mean()


#: Batches kept as tensor references before they are folded into the sums (bounds memory on endless epochs).
FLUSH_EVERY = 1024


class Metrics(Callback):
    """Track ``loss`` and each metric per phase and epoch; read them in :attr:`history` after ``fit``.

    Args:
        *fns: metric functions ``fn(pred, target) -> scalar tensor``, averages over the batch (as a loss is), or
            metric objects with ``update(pred, target)``, ``compute()`` and ``reset()`` (torchmetrics' ``F1Score``,
            ``AUROC``, ...) for metrics that are not averages: updated every batch, reset at each phase's start,
            computed at its end (torchmetrics syncs their state across ranks when it computes). Their state is
            kept per rank in checkpoints.
        names: names for the metrics; default each function's ``__name__``.

    Raises:
        TypeError: a metric that is not callable.
        ValueError: names that are not one distinct name per function, or a name ``"loss"``.

    Attributes:
        latest_phase: the means of the latest finished phase (``{"valid_loss": ..., ...}``).
        history: one dict per finished epoch: ``{"epoch": 0, "train_loss": ..., "valid_loss": ...,
            "train_<metric>": ..., "valid_<metric>": ...}`` (one ``<name>_*`` group per evaluation set); means
            weighted by batch size (the first dimension of the target). With
            :class:`~loopkit.callbacks.validate_first.ValidateFirst`, the first row is its ``{"epoch": -1, ...}``.
        hyperparams: the per-step values every Scheduler applied, by hyperparameter name (the Schedulers'
            own history lists, not copies).
    """

    agrees_across_ranks = True  # only accumulates; it cancels nothing

    reads = ("loss", "pred", "yb", "xb", "phase", "epoch", "callbacks", "global_step", "micro_batch", "metrics")
    writes = ("metrics",)  # learner.metrics: the latest epoch's row, which the monitors read

    def __init__(self, *fns: Callable[[Any, Any], torch.Tensor], names: list[str] | None = None) -> None:
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"Metrics takes functions fn(pred, target) -> tensor, got {fn!r}")
        names = list(names) if names is not None else [getattr(fn, "__name__", type(fn).__name__) for fn in fns]
        if len(names) != len(fns) or len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"Metrics needs one distinct name per function (not 'loss'), got names={names!r}")
        # Metric objects (torchmetrics' F1Score, AUROC, ...) keep their own state over the phase and sync it
        # across ranks when they compute; plain functions are averaged here.
        self.stateful: dict[str, Any] = {name: fn for name, fn in zip(names, fns) if _is_stateful(fn)}
        self.fns = tuple(fn for fn in fns if not _is_stateful(fn))
        self.names = ["loss", *(name for name in names if name not in self.stateful)]
        self.history: list[dict[str, float]] = []
        self.hyperparams: dict[str, list[float]] = {}
        self._row: dict[str, float] = {}
        self.latest_phase: dict[str, float] = {}
        self._sums: torch.Tensor | None = None  # float64 sums (one per name) of value * batch size, folded
        self._count = 0  # samples folded into _sums
        self._values: list[list[torch.Tensor]] = [[] for _ in self.names]  # per name, one tensor per batch
        self._sizes: list[int] = []
        self._kept = 0  # entries of _values/_sizes whose step happened (or all of them, in validation)
        self._window_step = 0  # global_step when the current accumulation window began

    def before_fit(self, learner: Any) -> None:
        self.history = []
        self.hyperparams = {}
        self._learner = learner
        learner.metrics = {}
        for cb in learner.callbacks:
            if isinstance(cb, Scheduler):
                self.hyperparams.update(cb.history)

    def before_epoch(self, learner: Any) -> None:
        first = first_evaluation(learner)
        if first is not None and not self.history:  # ValidateFirst's row, kept once (a resume has it already)
            self.history.append(dict(first))
        self._row = {"epoch": learner.epoch}

    def before_train(self, learner: Any) -> None:
        for metric in self.stateful.values():
            metric.reset()
        self._sums, self._count, self._kept = None, 0, 0
        self._sizes.clear()
        for column in self._values:
            column.clear()
        self._window_step = learner.global_step

    before_valid = before_train

    def after_loss(self, learner: Any) -> None:
        if learner.phase == "train" and learner.micro_batch == 0:
            self._settle_window(learner.global_step)
        values, sizes = self._values, self._sizes
        values[0].append(learner.loss.detach())
        if self.fns:
            with torch.no_grad():
                for column, fn in zip(values[1:], self.fns):
                    column.append(fn(learner.pred, learner.yb).detach())
        sizes.append(batch_size(learner))
        if self.stateful:
            self._update_stateful(learner.pred, learner.yb)
        if learner.phase != "train":
            self._kept = len(sizes)
            if self._kept >= FLUSH_EVERY:
                self._fold()

    def _update_stateful(self, pred: Any, target: Any) -> None:
        with torch.no_grad():
            for metric in self.stateful.values():
                device = getattr(pred, "device", None)
                if device is not None and getattr(metric, "device", device) != device:
                    metric.to(device)  # once: a metric object starts on the CPU
                metric.update(pred.detach(), target)

    def _settle_window(self, global_step: int) -> None:
        """At a window's end: keep its values if its optimizer step happened, else drop them."""
        if global_step != self._window_step:
            self._kept = len(self._sizes)
            self._window_step = global_step
            if self._kept >= FLUSH_EVERY:
                self._fold()
        else:
            del self._sizes[self._kept :]
            for column in self._values:
                del column[self._kept :]

    def _fold(self) -> None:
        """Add the kept entries to the float64 sums on their device (no host sync) and drop them."""
        kept = self._kept
        if not kept:
            return
        columns = self._values
        stacked = torch.stack([torch.stack(column[:kept]).to(torch.float64).reshape(kept) for column in columns])
        weights = torch.tensor(self._sizes[:kept], dtype=torch.float64).to(stacked.device, non_blocking=True)
        sums = stacked @ weights
        # A state restored from a checkpoint lives on the CPU; follow the batches to their device once.
        self._sums = sums if self._sums is None else self._sums.to(sums.device) + sums
        self._count += sum(self._sizes[:kept])
        del self._sizes[:kept]
        for column in columns:
            del column[:kept]
        self._kept = 0

    def _reduce(self, totals: torch.Tensor) -> torch.Tensor:
        """The phase's ``[sums..., count]`` over every process: the one place a distributed run reduces."""
        if is_distributed() and world_size() > 1:
            return all_reduce_sum(totals.to(collective_device()))
        return totals

    def after_train(self, learner: Any) -> None:
        if learner.phase == "train":
            self._settle_window(learner.global_step)
        self._fold()
        distributed = is_distributed() and world_size() > 1
        if self._sums is None and not distributed:
            return
        # In a distributed run every rank joins the reduce, a rank without batches with zeros.
        sums = self._sums if self._sums is not None else torch.zeros(len(self.names), dtype=torch.float64)
        totals = self._reduce(torch.cat([sums, sums.new_tensor([float(self._count)])])).tolist()  # one host read
        if totals[-1] > 0:
            self.latest_phase = {
                f"{learner.phase}_{name}": total / totals[-1] for name, total in zip(self.names, totals[:-1])
            }
            self._row.update(self.latest_phase)
        for name, metric in self.stateful.items():  # compute() syncs the metric's state across ranks itself
            value = float(metric.compute())
            self.latest_phase[f"{learner.phase}_{name}"] = value
            self._row[f"{learner.phase}_{name}"] = value

    after_valid = after_train

    def after_epoch(self, learner: Any) -> None:
        self.history.append(dict(self._row))
        learner.metrics = self.history[-1]

    def state_dict(self) -> dict[str, Any]:
        learner = getattr(self, "_learner", None)
        if learner is not None and learner.phase == "train" and learner.micro_batch == 0:
            self._settle_window(learner.global_step)  # a checkpoint is taken after a step: keep its values
        self._fold()
        # A phase's partial sums are each rank's own: every rank's are kept, as a list indexed by rank (a
        # collective in a distributed run; checkpoints are taken on every rank); the history is the same on all.
        partial = (None if self._sums is None else self._sums.detach().cpu(), self._count)
        return {
            "history": [dict(r) for r in self.history],
            "row": dict(self._row),
            "partial": all_gather(partial),
            "stateful": all_gather({name: _metric_state(m) for name, m in self.stateful.items()}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]
        self._row = dict(state["row"])
        partial = state["partial"]
        # Mid-phase a checkpoint resumes only at its own world size (the checkpoint refuses otherwise); between
        # phases every rank's sums are empty, whatever the world size.
        self._sums, self._count = partial[rank()] if rank() < len(partial) else (None, 0)
        stateful = state.get("stateful") or [{}]
        for name, values in (stateful[rank()] if rank() < len(stateful) else {}).items():
            for attr, value in values.items():
                setattr(self.stateful[name], attr, value)
        self._sizes.clear()
        for column in self._values:
            column.clear()
        self._kept = 0
        learner = getattr(self, "_learner", None)
        self._window_step = learner.global_step if learner is not None else 0

    def latest(self, key: str) -> float:
        """The most recent epoch's value of ``key`` (``"valid_loss"``, ...); ``KeyError`` lists the keys."""
        if not self.history or key not in self.history[-1]:
            known = sorted(self.history[-1]) if self.history else []
            raise KeyError(f"no metric {key!r} after this epoch; known: {known}")
        return self.history[-1][key]


def _is_stateful(fn: object) -> bool:
    """A metric object with its own state (torchmetrics' ``Metric``): ``update``, ``compute`` and ``reset``."""
    return all(callable(getattr(fn, method, None)) for method in ("update", "compute", "reset"))


def _metric_state(metric: Any) -> dict[str, Any]:
    """A torchmetrics object's accumulated state (tensors, or lists of tensors), copied to the CPU."""
    state = getattr(metric, "metric_state", {})
    return {k: [t.detach().cpu() for t in v] if isinstance(v, list) else v.detach().cpu() for k, v in state.items()}
