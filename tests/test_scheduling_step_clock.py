"""The Scheduler's clock under accumulation and skipped steps: it counts optimizer steps that happened."""

from __future__ import annotations

import pytest
import torch

from loopkit import CancelStep, Learner, Schedule, Scheduler, steps
from loopkit.callbacks import GradientAccumulation
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from tests.test_callbacks_step import _data, _model, _sgd


def test_a_warmup_counts_optimizer_steps_under_accumulation():
    """Lightning #1476: a 6-step warmup is 6 optimizer steps, not 6 micro-batches."""
    data = _data([8] * 12)
    model = _model()
    schedule = Schedule([0, steps(6)], [0.0, 0.06])
    sched = Scheduler({LearningRate: schedule})
    used = []

    class LrAtStep:
        reads = ("optimizer",)

        def before_step(self, learner):
            used.append(learner.optimizer.param_groups[0]["lr"])

    learner = Learner(
        model,
        data,
        _sgd(model),
        torch.nn.functional.mse_loss,
        callbacks=[GradientAccumulation(3), sched, LrAtStep()],
    )
    learner.fit(2)
    assert learner.global_step == 8
    assert used == pytest.approx([0.01 * min(s, 6) for s in range(8)], rel=1e-12)  # linear 0 -> 0.06, then held
    assert sched.history["lr"] == pytest.approx(used, rel=1e-12)


def test_a_skipped_step_is_not_a_step_for_the_schedule_or_its_log():
    data = _data([8] * 6)
    model = _model()
    schedule = Schedule([0, 5], [0.05, 0.0], unit="step")  # the step axis: indexed by steps that happened
    sched = Scheduler({LearningRate: schedule})
    used = []

    class SkipSome:
        reads = ("batch_idx", "optimizer")

        def before_step(self, learner):
            if learner.batch_idx in (1, 2):
                raise CancelStep

        def after_step(self, learner):
            used.append(learner.optimizer.param_groups[0]["lr"])

    learner = Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[sched, SkipSome()])
    learner.fit(1)
    assert learner.global_step == 4
    assert used == pytest.approx([0.05 * (1 - s / 5) for s in range(4)], rel=1e-12)
    assert sched.history["lr"] == used  # one value per step that happened, the value the optimizer used


def test_a_fit_without_an_epoch_count_lays_fractions_out_over_the_step_budget():
    data = _data([8] * 4)
    model = _model()
    schedule = Schedule([0, 1], [0.05, 0.0], unit="fraction")
    sched = Scheduler({LearningRate: schedule})
    learner = Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[sched])
    learner.fit(max_steps=10)
    assert learner.global_step == 10
    assert sched.history["lr"] == pytest.approx([0.05 * (1 - s / 10) for s in range(10)], rel=1e-12)
