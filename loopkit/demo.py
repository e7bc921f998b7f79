"""The main job: classify scikit-learn's handwritten digits, a whole run given as parameters.

Run ``python -m loopkit.demo`` (``--help`` lists every parameter as a flag; ``--config run.yaml`` reads them
from a file). The data is scikit-learn's ``load_digits``: 1,797 real 8x8 images of handwritten digits that ship
inside scikit-learn (no download), split into a training set and a held-out set the model never trains on. A
small MLP trains with the optimizer, schedule, loss and options named by the parameters (AdamW under a
one-cycle schedule stepped per batch, cross-entropy, by default), and the run is recorded under
``runs/digits/<run>`` (parameters, status, per-epoch metrics, checkpoints, TensorBoard logs); see
``docs/runs.md``.

This module is also a *task* for :mod:`loopkit.runs`: ``Params`` declares the parameters and
``build(params, callbacks)`` returns the Learner, so ``python -m loopkit.runs sweep`` can search it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Literal

import torch

from .callbacks import Metrics, ProgressBar, accuracy
from .loop.learner import Learner
from .optimizers import make_optimizer
from .runs.parameters import ParameterError, param
from .runs.registry import make_loss, make_schedule, scheduler_per
from .scheduling.optimizer_hyperparams import LearningRate
from .scheduling.scheduler import Scheduler

MONITOR, MODE = "valid_accuracy", "max"  # what a sweep of this task optimises by default


#: Where its runs are recorded by default (runs/digits/...), from ``python -m loopkit.demo`` or
#: ``python -m loopkit.runs run loopkit.demo``.
EXPERIMENT = "digits"


@dataclasses.dataclass
class Params:
    """The demo's parameters; each is a flag (``--learning_rate=0.003``) and a config-file key."""

    epochs: int = param(20, help="epochs to train", low=1)
    batch_size: int = param(64, help="training batch size", low=1)
    learning_rate: float = param(3e-3, help="peak learning rate of the schedule", low=0)
    optimizer: str = param("adamw", help="a torch.optim optimizer by name (any case)")
    optimizer_options: dict = param({"weight_decay": 1e-4}, help="the optimizer's options, as JSON")
    scheduler: str = param("onecycle", help="a schedule by name (loopkit.runs.registry)")
    scheduler_options: dict = param({}, help="the schedule's options, as JSON (durations are fractions of the fit)")
    scheduler_step: Literal["batch", "epoch"] = param("batch", help="step the schedule per batch or per epoch")
    loss: str = param("cross_entropy", help="a torch.nn loss by name")
    loss_options: dict = param({}, help='the loss\'s options, as JSON (e.g. {"label_smoothing": 0.1})')
    hidden: int = param(128, help="width of the hidden layer", low=1)
    dropout: float = param(0.1, help="dropout before the output layer", low=0, high=0.95)
    valid_fraction: float = param(0.2, help="fraction of the digits held out", low=0.05, high=0.5)
    seed: int = param(0, help="seed of the split, the initial weights and the shuffle")
    quiet: bool = param(False, help="no progress bar")

    def __post_init__(self) -> None:
        # Names and options are checked here, with the parameters, so that a bad one is a usage error of the
        # command line (and a sweep refuses it before any trial) instead of a run that starts and fails.
        # The library's message speaks of its own arguments (a schedule's "peak"): name the parameters given.
        checks = [
            (("scheduler", "learning_rate", "scheduler_options"), "the schedule's peak is learning_rate", lambda: (
                make_schedule(self.scheduler, self.learning_rate, self.scheduler_options))),
            (("loss", "loss_options"), "", lambda: make_loss(self.loss, self.loss_options)),
            (("optimizer", "learning_rate", "optimizer_options"), "the optimizer's lr is learning_rate", lambda: (
                make_optimizer(self.optimizer, [torch.nn.Parameter(torch.zeros(1))], self._optimizer_options()))),
        ]  # fmt: skip
        for names, note, build in checks:
            try:
                build()
            except (ValueError, TypeError) as error:
                given = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
                raise ParameterError(f"{given}: {error}" + (f" ({note})" if note else "")) from error

    def _optimizer_options(self) -> dict:
        return {"lr": self.learning_rate, **self.optimizer_options}


def digits(
    valid_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    """scikit-learn's digits as float32 ``(N, 64)`` pixels scaled to [0, 1] and int64 labels, split per class.

    The split is stratified (every digit held out in the same proportion) and fixed by ``seed``.
    """
    from sklearn.datasets import load_digits  # lazily: scikit-learn is the demo extra, not a core dependency

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    held_out = torch.zeros(len(y), dtype=torch.bool)
    for label in range(10):
        members = (y == label).nonzero().squeeze(1)
        chosen = members[torch.randperm(len(members), generator=g)[: round(valid_fraction * len(members))]]
        held_out[chosen] = True
    return (
        torch.utils.data.TensorDataset(x[~held_out], y[~held_out]),
        torch.utils.data.TensorDataset(x[held_out], y[held_out]),
    )


def build(params: Params, callbacks: Sequence[object] = ()) -> Learner:
    """The demo's Learner for ``params``, with ``callbacks`` added (run records, pruning, checkpoints, ...)."""
    torch.manual_seed(params.seed)
    train, valid = digits(params.valid_fraction, params.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, params.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(params.dropout),
        torch.nn.Linear(params.hidden, 10),
    )
    optimizer = make_optimizer(params.optimizer, model.parameters(), params._optimizer_options())
    schedule = make_schedule(params.scheduler, params.learning_rate, params.scheduler_options)
    return Learner(
        model,
        torch.utils.data.DataLoader(train, batch_size=params.batch_size, shuffle=True),
        optimizer,
        make_loss(params.loss, params.loss_options),
        valid_data=torch.utils.data.DataLoader(valid, batch_size=512),
        callbacks=[
            Scheduler({LearningRate: schedule}, per=scheduler_per(params.scheduler_step)),
            Metrics(accuracy),
            ProgressBar(quiet=params.quiet),
            *callbacks,
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    from .runs.cli import run_task_main

    torch.set_num_threads(1)  # the model is tiny: waking a second thread per op costs more than it saves
    run = run_task_main(sys.modules[__name__], argv, prog="python -m loopkit.demo")
    held_out = len(digits(run.params["valid_fraction"], run.params["seed"])[1])
    print(
        f"\nHeld-out accuracy: {run.info['final']['valid_accuracy']:.1%} of the {held_out} digits the model never "
        f"trained on (chance is 10%). Compare runs: python -m loopkit.runs list {run.experiment} --sort valid_accuracy"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
