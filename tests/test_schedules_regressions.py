"""Two regressions of issue 25, pinned: a single restart cycle cut by the fit, and an error that printed a tensor."""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner
from loopkit.schedules import cosine_restarts
from loopkit.scheduling.hyperparams import Attribute
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from loopkit.scheduling.scheduler import Scheduler


def fit(schedule, n_steps):
    model = torch.nn.Linear(1, 1)
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * n_steps
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = Scheduler({LearningRate: schedule})
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched]).fit(1)
    return sched.history["lr"]


def test_a_single_cycle_longer_than_the_fit_is_refused_at_fit_start():
    # 8 warmup steps + one 40-step cycle = 48 steps: a 40-step fit would stop 8 steps short of the floor
    schedule = cosine_restarts(40, 1e-3, cycles=1, floor=1e-5, warmup=8, warmup_start=1e-5)
    assert schedule.bind().horizon == 48.0 and schedule.bind().open_from == 48.0
    with pytest.raises(ValueError, match="ends at 48 steps but the fit ends at 40"):
        fit(schedule, 40)
    lrs = fit(schedule, 48)  # played to its end it is accepted, and its last step is one step short of the floor
    assert len(lrs) == 48 and lrs[-1] > 1e-5


def test_the_last_of_several_cycles_may_still_be_cut():
    schedule = cosine_restarts(20, 1e-3, cycles=2, floor=1e-5, warmup=8)  # last cycle starts at 28
    assert schedule.bind().open_from == 28.0
    assert len(fit(schedule, 40)) == 40


def test_an_attribute_error_describes_a_tensor_by_shape_and_dtype_not_by_its_values():
    class Holder:
        model = torch.nn.Sequential(torch.nn.Linear(30, 30))

    with pytest.raises(TypeError) as info:
        Attribute("model.0.weight").check(Holder())
    message = str(info.value)
    assert "a tensor of shape (30, 30) and dtype torch.float32" in message
    assert "tensor(" not in message and len(message) < 200


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Attribute(t),
        lambda t: Attribute("loss_fn.margin", domain=t),
        lambda t: LearningRate(group=t),
        lambda t: LearningRate(scale_groups=t),
    ],
)
def test_no_hyperparameter_argument_error_prints_a_tensors_values(make):
    big = torch.arange(1000.0)
    with pytest.raises((TypeError, ValueError)) as info:
        make(big)
    assert "a tensor of shape (1000,) and dtype torch.float32" in str(info.value)
    assert "999." not in str(info.value)


def test_exponential_limits_at_zero_and_a_growth_from_zero():
    from loopkit.schedules import exponential_lr, step_lr

    assert exponential_lr(1.0, 0.5, end_value=0.0).values(3).tolist() == [1.0, 0.5, 0.25]  # a floor at 0: none
    assert step_lr(0.0, 2, 0.5, end_value=0.0).values(3).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"exponential_lr\(base_lr=0.0, gamma=2.0\): a growth from 0 stays at 0"):
        exponential_lr(0.0, 2.0, end_value=1.0)
    grow = exponential_lr(1e-3, 10.0, end_value=1.0).bind()
    assert grow(1e6) == 1.0 and grow.table([0.0, 1.0, 3.0, 1e300]).tolist() == [1e-3, 1e-3 * 10.0, 1.0, 1.0]
