"""A task whose length is a step budget (``max_steps``), with ``epochs`` optional: for the budget tests."""

from __future__ import annotations

import dataclasses

import torch

from loopkit import Learner, Metrics
from loopkit.runs import param

MONITOR, MODE = "valid_loss", "min"


@dataclasses.dataclass
class Params:
    epochs: int | None = param(None, low=1)
    max_steps: int | None = param(None, low=1)
    valid_every: int | None = param(None, low=1)
    lr: float = param(0.05, low=0)
    threads: int | None = param(None, low=1)


def stream():
    g = torch.Generator().manual_seed(0)
    while True:
        x = torch.randn(8, 3, generator=g)
        yield x, x.sum(dim=1, keepdim=True)


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):
        return stream()


def build(params: Params, callbacks=()) -> Learner:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    train = [(x[i : i + 8], x[i : i + 8].sum(1, keepdim=True)) for i in range(0, 32, 8)]
    return Learner(
        model,
        torch.utils.data.DataLoader(Endless(), batch_size=None) if params.valid_every else train,
        torch.optim.SGD(model.parameters(), lr=params.lr),
        torch.nn.functional.mse_loss,
        valid_data=[(x, x.sum(1, keepdim=True))],
        callbacks=[Metrics(), *callbacks],
    )
