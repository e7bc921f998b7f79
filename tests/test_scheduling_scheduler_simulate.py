"""Scheduler.simulate: the values a fit would apply, without a model, against what a real fit's optimizer used."""

from __future__ import annotations

import pytest
import torch

from loopkit import (
    Attribute,
    Callback,
    Learner,
    LearningRate,
    Momentum,
    Schedule,
    Scheduler,
    onecycle,
    onecycle_momentum,
)
from loopkit.callbacks import GradientAccumulation


class Used(Callback):
    """The lr, momentum and loss margin each optimizer step used, read just before the step; one entry per epoch
    with ``per_epoch`` (read at the epoch's first step)."""

    reads = ("optimizer", "loss_fn", "micro_batch", "batch_idx")

    def __init__(self, per_epoch=False):
        self.per_epoch = per_epoch
        self.values = {"lr": [], "momentum": [], "loss_fn.margin": []}

    def before_step(self, learner):
        if self.per_epoch and learner.batch_idx >= learner.micro_batches_per_step:
            return
        group = learner.optimizer.param_groups[0]
        self.values["lr"].append(group["lr"])
        self.values["momentum"].append(group["momentum"])
        self.values["loss_fn.margin"].append(learner.loss_fn.margin)


class MarginLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.margin = 1.0

    def forward(self, pred, target):
        return torch.nn.functional.mse_loss(pred, target) * self.margin


def fit(scheduler, n_batches, *, n_epochs=None, max_steps=None, accumulate=1, per_epoch=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(2, 3), torch.randn(2, 1)) for _ in range(n_batches)]
    used = Used(per_epoch)
    callbacks = [scheduler, used] + ([GradientAccumulation(accumulate)] if accumulate > 1 else [])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    Learner(model, data, optimizer, MarginLoss(), callbacks=callbacks).fit(n_epochs, max_steps=max_steps)
    return used.values


CASES = {
    # name: (schedules, Scheduler kwargs, fit kwargs)
    "epoch axis, per step": ({LearningRate: Schedule([0, 1.5, 3], [0.01, 0.1, 1e-4], anneal="cos")}, {}, {}),
    "step axis, per step": ({LearningRate: Schedule([0, 20], [0.1, 0.0], unit="step")}, {"on_mismatch": "hold"}, {}),
    "one-cycle lr and momentum": ({LearningRate: onecycle(3, 0.1), Momentum: onecycle_momentum(3)}, {}, {}),
    "per epoch": ({LearningRate: Schedule([0, 3], [0.1, 0.01])}, {"per": "epoch"}, {}),
    "stretched": ({LearningRate: Schedule([0, 6], [0.1, 0.0])}, {"on_mismatch": "stretch"}, {}),
    "accumulation(3) over 7 batches": ({LearningRate: onecycle(3, 0.1)}, {}, {"accumulate": 3}),
    "max_steps without epochs": ({LearningRate: Schedule([0, 1], [0.1, 0.0])}, {}, {"n_epochs": None, "max_steps": 11}),
    "an attribute": ({Attribute("loss_fn.margin"): Schedule([0, 3], [1.0, 3.0])}, {}, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_simulate_equals_what_the_optimizer_used_in_a_real_fit(case):
    schedules, options, fit_options = CASES[case]
    fit_options = {"n_epochs": 3, "max_steps": None, "accumulate": 1, **fit_options}
    n_batches = 7
    simulated = Scheduler(schedules, **options).simulate(
        fit_options["max_steps"],
        n_epochs=fit_options["n_epochs"],
        n_batches=n_batches,
        micro_batches_per_step=fit_options["accumulate"],
    )
    scheduler = Scheduler(schedules, **options)
    used = fit(scheduler, n_batches, per_epoch=options.get("per") == "epoch", **fit_options)
    assert simulated == scheduler.history  # the same values, bit for bit, as the fit recorded
    for name, values in simulated.items():
        assert values == used[name], name  # and as the optimizer (or the loss) really held before each step
    n = len(next(iter(simulated.values())))
    if options.get("per") == "epoch":
        assert n == 3  # one value an epoch
    elif fit_options["max_steps"] is not None:
        assert n == fit_options["max_steps"]
    else:
        assert n == 3 * -(-n_batches // fit_options["accumulate"])


def test_simulate_by_hand_linear_schedule_and_leaves_the_scheduler_untouched():
    scheduler = Scheduler({LearningRate: Schedule([0, 2], [1.0, 0.0])})
    values = scheduler.simulate(n_epochs=2, n_batches=4)["lr"]
    assert values == [1.0 - (e + b / 4) / 2 for e in range(2) for b in range(4)]  # epoch position e + b / 4
    assert scheduler.history == {"lr": []}
    assert scheduler.simulate(3, n_epochs=2, n_batches=4)["lr"] == values[:3]  # n steps of the same fit


def test_simulate_refuses_what_the_fit_would_refuse_and_bad_arguments():
    long = Scheduler({LearningRate: Schedule([0, 5], [0.1, 0.0])})
    with pytest.raises(ValueError, match="ends at 5 epochs but the fit ends at 2"):
        long.simulate(n_epochs=2, n_batches=4)
    with pytest.raises(ValueError, match="would never end"):
        long.simulate(n_epochs=2)
    with pytest.raises(ValueError, match=r"n_steps=0"):
        long.simulate(0)
    with pytest.raises(ValueError, match=r"micro_batches_per_step=True"):
        long.simulate(3, micro_batches_per_step=True)
    with pytest.raises(ValueError, match="timed in epochs"):
        long.simulate(10)  # data without a length: the position inside an epoch is unknown
