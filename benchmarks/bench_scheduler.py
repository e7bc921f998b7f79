"""What scheduling costs per step: loopkit's Scheduler vs torch's OneCycleLR, and guarded-view reads.

- ``scheduler_two_hps``: one ``before_batch`` of a Scheduler moving lr and momentum (one-cycle), i.e.
  evaluating and setting two hyperparameters;
- ``torch_onecycle``: one ``OneCycleLR.step()`` (lr and momentum), the reference point (~9 us);
- ``attribute_read_view`` / ``attribute_read_learner``: 1,000 attribute reads through a callback's guarded
  view and on the learner itself; equal within noise is the claim that write enforcement costs reads nothing.

    pytest benchmarks/bench_scheduler.py --benchmark-only --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner
from loopkit.guard import guarded_view
from loopkit.hyperparams import LearningRate, Momentum
from loopkit.scheduler import Scheduler
from loopkit.schedules import onecycle, onecycle_momentum

STEPS = 10_000


def _learner_with_scheduler():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = Scheduler({LearningRate: onecycle(1, 0.1), Momentum: onecycle_momentum(1)})
    data = [(torch.zeros(1, 4), torch.zeros(1, 1))] * STEPS
    learner = Learner(model, data, optimizer, torch.nn.functional.mse_loss, callbacks=[scheduler])
    learner.n_epochs, learner.phase, learner.epoch = 1, "train", 0
    scheduler.before_fit(learner)
    scheduler.before_train(learner)
    return learner, scheduler


def test_scheduler_two_hps(benchmark):
    learner, scheduler = _learner_with_scheduler()
    state = {"k": 0}

    def one_step():
        learner.batch_idx = learner.global_step = state["k"] % STEPS
        state["k"] += 1
        scheduler.before_batch(learner)

    benchmark.pedantic(one_step, rounds=STEPS, iterations=1, warmup_rounds=100)


def test_torch_onecycle(benchmark):
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10 * STEPS + 200)
    optimizer.step()  # torch warns if its scheduler steps before the optimizer ever did
    benchmark.pedantic(sched.step, rounds=STEPS, iterations=1, warmup_rounds=100)


@pytest.mark.parametrize("through", ["view", "learner"])
def test_attribute_read(benchmark, through):
    learner, scheduler = _learner_with_scheduler()
    target = guarded_view(learner, scheduler) if through == "view" else learner

    def reads():
        for _ in range(1000):
            target.loss  # noqa: B018 - the bare attribute read is what this measures
            target.global_step  # noqa: B018

    benchmark(reads)
