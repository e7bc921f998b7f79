"""TensorBoard: event files with the per-step loss, the optimizer's options each step used, every other
scheduled hyperparameter, per-epoch metrics and the run's hyperparameters.

tensorboard is imported when the fit starts, not with loopkit. Per-step losses stay on the device in a buffer
and are written every ``flush_every`` steps with one host read, so logging costs no sync per step.

The optimizer's options (``lr``, and ``momentum`` / ``weight_decay`` where a callback declares it writes them)
are read from ``optimizer.param_groups`` after each step: what the optimizer used, whoever set it (a
Scheduler, a :class:`~loopkit.callbacks.plateau.ReduceLROnPlateau` cut, the user). Other scheduled
hyperparameters (a loss margin, a dropout rate, custom types) are read from the Schedulers' histories, the
values they applied.

On resume the writer opens with ``purge_step`` at the resumed step, so TensorBoard discards anything an
interrupted run wrote past its last checkpoint.

Tags, against the global step: ``train/loss`` (every optimizer step that happened: the step's loss, under
gradient accumulation the sample-weighted mean over its window, unscaled under mixed precision),
``hparams/<key>`` and ``hparams/<key>/group<i>`` (the value param group 0, or ``i``, held when each step was
taken, e.g. ``hparams/lr``; ``momentum`` is ``betas[0]`` for Adam-style optimizers), ``hparams/<name>`` (every
value a per-step Scheduler applied to any other hyperparameter; a per-epoch Scheduler's go to
``hparams_per_epoch/<name>`` against the epoch), ``epoch/<metric>`` (at the step each epoch ends, from
:class:`~loopkit.callbacks.metrics.Metrics`), and at the end a text summary ``run/hyperparameters`` plus an
entry for TensorBoard's hparams plugin.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from .._validate import whole_number
from ..distributed import is_main_process
from ..loop.callback import Callback
from ..scheduling.optimizer_hyperparams import OptimizerHyperParameter
from ..scheduling.scheduler import Scheduler

#: The param-group options logged when a callback declares it writes them (``"optimizer.momentum"``); ``lr``
#: always. The tag's name, and how to read the value from a group.
_OPTIONS = {
    "lr": lambda g: g["lr"],
    "momentum": lambda g: g["betas"][0] if "betas" in g else g["momentum"],
    "weight_decay": lambda g: g["weight_decay"],
}


class TensorBoard(Callback):
    """Write TensorBoard event files under ``logdir``.

    Args:
        logdir: the run directory (created if missing).
        flush_every: write the buffered per-step values every this many steps (and at every epoch end).
        hparams: the run's own parameters (``{"learning_rate": 0.003, "scheduler": "onecycle", ...}``) for the
            hparams entry, beside what the optimizer and Schedulers say; values that are not numbers, strings
            or booleans are stored as their JSON text.

    Raises:
        ValueError: a ``flush_every`` that is not a whole number >= 1.
        TypeError: ``hparams`` that is not a mapping, a ``logdir`` that is not a path.
        ImportError: at construction, if the ``tensorboard`` package is not installed (it is looked up then, and
            imported only when the fit starts, not with loopkit).
    """

    agrees_across_ranks = True  # only writes (on rank 0); it cancels nothing

    reads = ("step_loss", "phase", "global_step", "epoch", "n_epochs", "callbacks", "optimizer", "metrics")
    run_after = ("Metrics",)

    def __init__(
        self, logdir: str | os.PathLike, *, flush_every: int = 100, hparams: Mapping[str, Any] | None = None
    ) -> None:
        whole_number("TensorBoard", "flush_every", flush_every)
        if hparams is not None and not isinstance(hparams, Mapping):
            raise TypeError(f"TensorBoard(hparams=...) takes a mapping of parameter names to values, got {hparams!r}")
        self.hparams = {
            k: v if isinstance(v, (int, float, bool, str)) else json.dumps(v, default=repr)
            for k, v in (hparams or {}).items()
        }
        if not isinstance(logdir, (str, os.PathLike)) or not os.fspath(logdir):
            raise TypeError(f"TensorBoard(logdir={logdir!r}): pass the run directory as a str or path")
        if importlib.util.find_spec("tensorboard") is None:  # fail at set-up, not after the first fit starts
            raise ImportError("TensorBoard needs the tensorboard package: pip install tensorboard (or loopkit[dev])")
        self.logdir = os.fspath(logdir)
        self.flush_every = flush_every
        self.writer: Any = None  # a torch SummaryWriter from before_fit to after_fit (imported lazily)
        self._losses: list[torch.Tensor] = []
        self._loss_steps: list[int] = []
        self._hp_logged: dict[str, int] = {}
        self._options: list[tuple[int, list[Any]]] = []  # (step, the logged options of every group), buffered
        self._keys: list[str] = []  # the options logged, from _OPTIONS

    def before_fit(self, learner: Any) -> None:
        self.writer = None
        if not is_main_process():
            return  # one writer per run: rank 0 (Distributed has set up the process group by now)
        from torch.utils.tensorboard import SummaryWriter  # lazily: tensorboard is heavy

        self._schedulers = [cb for cb in learner.callbacks if isinstance(cb, Scheduler)]
        self.writer = SummaryWriter(self.logdir, purge_step=learner.global_step or None)
        self._losses, self._loss_steps, self._hp_logged, self._options = [], [], {}, []
        written = {
            w.split(".")[1] for cb in learner.callbacks for w in getattr(cb, "writes", ()) if w.startswith("optimizer.")
        }
        first = learner.optimizer.param_groups[0] if learner.optimizer.param_groups else {}
        self._keys = [k for k in _OPTIONS if (k == "lr" or k in written) and _has(first, k)]
        self._initial_groups = [{k: v for k, v in g.items() if k != "params"} for g in learner.optimizer.param_groups]

    def after_step(self, learner: Any) -> None:
        # Only steps that happened are logged, each once, at its 0-based index (the index Scheduler.history
        # uses): a cancelled or skipped step's loss is never logged as the loss of a step.
        if self.writer is not None:  # rank 0 only
            self._losses.append(learner.step_loss.detach())
            self._loss_steps.append(learner.global_step - 1)
            # What this step used, read after it: a tensor option is copied (read on the host at the flush).
            values = [_OPTIONS[k](g) for g in learner.optimizer.param_groups for k in self._keys]
            self._options.append((learner.global_step - 1, [_copy(v) for v in values]))

    def after_batch(self, learner: Any) -> None:
        if learner.phase == "train" and len(self._losses) >= self.flush_every:
            self._flush()

    def after_epoch(self, learner: Any) -> None:
        if self.writer is None:
            return
        self._flush()
        for key, value in learner.metrics.items():  # the epoch's means, when Metrics is there
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, learner.global_step)
        self.writer.flush()

    def after_fit(self, learner: Any) -> None:
        if self.writer is None:
            return
        self._flush()
        try:  # a run that failed or was pruned is logged too: a sweep's view compares every trial
            self._log_run(learner)
        finally:
            self.writer.close()
        self.writer = None

    def _flush(self) -> None:
        """Write buffered losses (one host read) and the hyperparameter values applied since the last flush."""
        if self._losses:
            for step, value in zip(self._loss_steps, torch.stack(self._losses).tolist()):
                self.writer.add_scalar("train/loss", value, step)
            self._losses, self._loss_steps = [], []
        n = len(self._keys)
        for step, values in self._options:
            for j, value in enumerate(values):
                group = j // n
                self.writer.add_scalar(
                    f"hparams/{self._keys[j % n]}" + (f"/group{group}" if group else ""), float(value), step
                )
        self._options = []
        for scheduler in self._schedulers:
            # Value i of a per-step history was applied at step i; of a per-epoch history, in epoch i. The
            # optimizer's options are logged from its param groups instead (above).
            tag = "hparams" if scheduler.per == "step" else "hparams_per_epoch"
            for hp, _ in scheduler.entries:
                if isinstance(hp, OptimizerHyperParameter):
                    continue
                name, history = hp.name, scheduler.history[hp.name]
                for i in range(self._hp_logged.get(name, 0), len(history)):
                    self.writer.add_scalar(f"{tag}/{name}", history[i], i)
                self._hp_logged[name] = len(history)

    def _log_run(self, learner: Any) -> None:
        # The user's own parameters win over same-named entries derived from the learner.
        error = learner.error
        hparams: dict[str, Any] = {
            "n_epochs": learner.n_epochs,
            "optimizer": type(learner.optimizer).__name__,
            "status": "finished" if error is None else type(error).__name__,
            **self.hparams,
        }
        for i, group in enumerate(self._initial_groups):
            for key, value in group.items():
                if isinstance(value, (int, float, bool, str)):
                    hparams[f"group{i}/{key}"] = value
        for scheduler in self._schedulers:
            for hp, schedule in scheduler.entries:
                hparams[f"schedule/{hp.name}"] = repr(schedule)
        final = {f"final/{k}": v for k, v in learner.metrics.items() if k != "epoch"}
        table = "\n".join(f"| {k} | {v} |" for k, v in hparams.items())
        self.writer.add_text("run/hyperparameters", "| name | value |\n|---|---|\n" + table, learner.global_step)
        self.writer.add_hparams(hparams, final, run_name=".")

    def state_dict(self) -> dict[str, Any]:
        # Buffered losses are part of the run's log: keep them so a resumed run writes them too.
        return {
            "losses": [t.cpu() for t in self._losses],
            "loss_steps": list(self._loss_steps),
            "hp_logged": dict(self._hp_logged),
            "options": [(step, [float(v) for v in values]) for step, values in self._options],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses = list(state["losses"])
        self._loss_steps = list(state["loss_steps"])
        self._hp_logged = dict(state["hp_logged"])
        self._options = [(int(step), list(values)) for step, values in state.get("options", [])]


def _has(group: Any, key: str) -> bool:
    try:
        _OPTIONS[key](group)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value
