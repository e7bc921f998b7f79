"""What scheduling costs per step: loopkit's Scheduler vs torch's OneCycleLR, and guarded-view reads.

- ``scheduler_two_hps``: one ``before_batch`` of a Scheduler moving lr and momentum (one-cycle), i.e.
  evaluating and setting two hyperparameters;
- ``torch_onecycle``: one ``OneCycleLR.step()`` (lr and momentum), the reference point (~9 us);
- ``attribute_read_view`` / ``attribute_read_learner``: 1,000 attribute reads through a callback's guarded
  view and on the learner itself; equal within noise is the claim that write enforcement costs reads nothing;
- ``phase_start[n]`` / ``step[n]`` for epochs of n = 10^3 ... 10^7 batches (issue 15, section 9): the Scheduler
  alone (lr and momentum, one-cycle over one epoch) from ``before_fit`` to its first step, with the peak memory it
  allocates there (tracemalloc, in ``extra_info``); ``step_by_epoch_length``: the cost of a step, 1,000 steps from
  the middle of each epoch length, interleaved (block refills included; medians per length in ``extra_info``).
  Neither may grow with n.

    pytest benchmarks/bench_scheduler.py --benchmark-only --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from loopkit import Learner
from loopkit.loop.guard import guarded_view
from loopkit.schedules import onecycle, onecycle_momentum
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum
from loopkit.scheduling.scheduler import Scheduler

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


# ----------------------------------------------------------------------------------------------- epoch length
class Batches:
    """A sized stand-in for training data of ``n`` batches: the Scheduler reads only its length."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter([(torch.zeros(1, 4), torch.zeros(1, 1))] * min(self.n, 1))


def _long_epoch(n):
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = Scheduler({LearningRate: onecycle(1, 0.1), Momentum: onecycle_momentum(1)})
    learner = Learner(model, Batches(n), optimizer, torch.nn.functional.mse_loss, callbacks=[scheduler])
    learner.n_epochs, learner.n_batches, learner.phase, learner.epoch = 1, n, "train", 0
    return learner, scheduler


def _start(learner, scheduler):
    learner.batch_idx = learner.global_step = 0
    scheduler.before_fit(learner)
    scheduler.before_train(learner)
    scheduler.before_batch(learner)


LENGTHS = [10**3, 10**4, 10**5, 10**6, 10**7]


@pytest.mark.parametrize("n", LENGTHS)
def test_phase_start(benchmark, n):
    learner, scheduler = _long_epoch(n)
    tracemalloc.start()
    _start(learner, scheduler)
    benchmark.extra_info["peak_bytes"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    benchmark.pedantic(_start, args=(learner, scheduler), rounds=50, iterations=1, warmup_rounds=2)


def test_step_by_epoch_length(benchmark):
    """1,000 steps from the middle of each epoch length in turn, interleaved round by round so that the
    machine's drift hits every length alike; ``extra_info`` holds each length's median us per step."""
    setups = {}
    for n in LENGTHS:
        learner, scheduler = _long_epoch(n)
        _start(learner, scheduler)
        setups[n] = (learner, scheduler, n // 2 - 500 if n > 1000 else 0)
    per_step: dict[int, list[float]] = {n: [] for n in LENGTHS}

    def one_round():
        for n, (learner, scheduler, middle) in setups.items():
            start = time.perf_counter()
            for k in range(middle, middle + 1000):
                learner.batch_idx = learner.global_step = k
                scheduler.before_batch(learner)
            per_step[n].append((time.perf_counter() - start) / 1000 * 1e6)
            for values in scheduler.history.values():
                values.clear()

    benchmark.pedantic(one_round, rounds=30, iterations=1, warmup_rounds=2)
    for n, times in per_step.items():
        benchmark.extra_info[f"us_per_step[{n}]"] = sorted(times)[len(times) // 2]
