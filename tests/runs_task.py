"""A tiny task for the run and sweep tests: linear regression on fixed data, a few milliseconds an epoch.

``fail_at_epoch`` raises in that epoch; the environment variable LOOPKIT_TEST_SLEEP (seconds) sleeps at the
start of every epoch after the first ``LOOPKIT_TEST_SLEEP_AFTER`` ones, so a test can kill the process mid-run.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from loopkit import Callback, Learner, Metrics, Scheduler
from loopkit.runs import param
from loopkit.runs.registry import make_schedule
from loopkit.scheduling.optimizer_hyperparams import LearningRate

MONITOR, MODE = "valid_loss", "min"


@dataclasses.dataclass
class Params:
    epochs: int = param(3, low=1)
    lr: float = param(0.05, low=0)
    scheduler: str = param("constant")
    scheduler_options: dict = param({})
    seed: int = param(0)
    fail_at_epoch: int = param(-1)
    width: int = param(4, low=1)


class Trouble(Callback):
    reads = ("epoch",)

    def __init__(self, fail_at_epoch: int) -> None:
        self.fail_at_epoch = fail_at_epoch

    def before_epoch(self, learner):
        if learner.epoch == self.fail_at_epoch:
            raise RuntimeError(f"planned failure in epoch {learner.epoch}")
        # Sleep at the start of an epoch: the previous epoch's checkpoint is on disk by then.
        sleep = float(os.environ.get("LOOPKIT_TEST_SLEEP", 0))
        if sleep and learner.epoch >= int(os.environ.get("LOOPKIT_TEST_SLEEP_AFTER", 0)):
            time.sleep(sleep)


def data(seed: int = 0):
    g = torch.Generator().manual_seed(1234)  # the data is the same for every seed
    x = torch.randn(96, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(96, 1, generator=g)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)], [(x[64:], y[64:])]


def build(params: Params, callbacks=()) -> Learner:
    torch.manual_seed(params.seed)
    train, valid = data()
    model = torch.nn.Sequential(torch.nn.Linear(3, params.width), torch.nn.Linear(params.width, 1))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train])),
        batch_size=16,
        shuffle=True,
    )
    return Learner(
        model,
        loader,
        torch.optim.SGD(model.parameters(), lr=params.lr),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[
            Scheduler({LearningRate: make_schedule(params.scheduler, params.lr, params.scheduler_options)}),
            Metrics(),
            Trouble(params.fail_at_epoch),
            *callbacks,
        ],
    )
