"""A user's training script, type-checked (not run) against the INSTALLED loopkit by typecheck/run.py.

mypy --strict must accept it: the public API's annotations reach users through the wheel's py.typed marker.
"""

from typing import Any

import torch
from typing_extensions import assert_type

import loopkit
from loopkit import (
    Callback,
    Checkpoint,
    EarlyStopping,
    Learner,
    LearningRate,
    Metrics,
    Momentum,
    NaNGuard,
    Schedule,
    Scheduler,
    accuracy,
    onecycle,
    onecycle_momentum,
)
from loopkit.scheduling import WeightDecay  # a name from its floor's package


class PrintLoss(Callback):
    reads = ("loss", "epoch")

    def after_epoch(self, learner: Any) -> None:
        print(learner.epoch, learner.loss)


def train(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr: Schedule = onecycle(3, 0.1)
    metrics = Metrics(accuracy)
    learner = Learner(
        model,
        data,
        optimizer,
        torch.nn.functional.cross_entropy,
        valid_data=data,
        callbacks=[
            Scheduler({LearningRate: lr, Momentum: onecycle_momentum(3), WeightDecay: Schedule([0, 3], [1e-4, 0.0])}),
            metrics,
            EarlyStopping("valid_loss", patience=2),
            NaNGuard(),
            Checkpoint("checkpoints"),
            PrintLoss(),
        ],
    )
    assert_type(learner.fit(3), Learner)
    assert_type(metrics.history, list[dict[str, float]])
    assert_type(loopkit.__version__, str)
    return metrics.history[-1]["valid_loss"]
