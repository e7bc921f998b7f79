"""What a Scheduler's write may touch: domains checked before training, param groups added mid-fit, tuple- and
tensor-valued options, and set-up mistakes in HyperParameter types (issue 11, sections 3, 4 and 5)."""

from __future__ import annotations

import math

import pytest
import torch

from loopkit import Callback, Learner, UndeclaredWriteError
from loopkit.schedules import Schedule
from loopkit.scheduling.batch_size import BatchSize, ScheduledBatchSampler
from loopkit.scheduling.domain import Domain
from loopkit.scheduling.hyperparams import Attribute, DropoutRate, HyperParameter
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum, WeightDecay
from loopkit.scheduling.scheduler import Scheduler


def learner_for(optimizer_factory, n_batches=2, callbacks=(), model=None, data=None):
    torch.manual_seed(0)
    model = model or torch.nn.Linear(3, 1)
    data = data if data is not None else [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(n_batches)]
    return Learner(model, data, optimizer_factory(model), torch.nn.functional.mse_loss, callbacks=list(callbacks))


class Steps(Callback):
    """Counts optimizer steps taken: a refused schedule must stop the fit before the first one."""

    reads = ("global_step",)

    def __init__(self):
        self.n = 0

    def after_step(self, learner):
        self.n += 1


# ----------------------------------------------------------------------------------------------- domains
def test_a_negative_learning_rate_on_sgd_is_refused_before_training():
    steps = Steps()
    scheduler = Scheduler({LearningRate: Schedule([0, 2], [0.1, -0.1])})
    learner = learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[scheduler, steps])
    weights = learner.model.weight.detach().clone()
    # fit(2) with 2 batches an epoch: the last step is at epoch 1.5, where the schedule stands at -0.05.
    with pytest.raises(
        ValueError,
        match=r"schedule for lr, Schedule\(\[0.0, 2.0\], \[0.1, -0.1\].*would write -0.05 "
        r"to param group 0 lr at epoch 1.5.*outside its domain \[0, inf\).*negative learning rate",
    ):
        learner.fit(2)
    assert steps.n == 0 and torch.equal(learner.model.weight, weights)


def test_the_last_step_not_the_fit_end_bounds_the_range():
    # A decay to -0.1 at epoch 2 in fit(1): the fit's last step is at epoch 0.5, where the lr is 0.025 > 0.
    scheduler = Scheduler({LearningRate: Schedule([0, 2], [0.1, -0.1])}, on_mismatch="hold")
    learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[scheduler]).fit(1)
    assert scheduler.history["lr"] == pytest.approx([0.1, 0.05], rel=1e-15)


def test_momentum_above_one_on_adam_is_refused_before_training():
    # torch's Adam would divide by 1 - beta1**t = 0 and beyond; the domain of betas[0] is [0, 1).
    steps = Steps()
    scheduler = Scheduler({Momentum: Schedule([0, 1], [0.9, 1.2])})
    learner = learner_for(lambda m: torch.optim.Adam(m.parameters(), lr=0.1), callbacks=[scheduler, steps])
    with pytest.raises(ValueError, match=r"would write 1.2 to param group 0 momentum.*\[0, 1\).*Adam"):
        learner.fit(2)
    assert steps.n == 0


def test_momentum_on_sgd_may_exceed_one_but_not_go_negative():
    ok = Scheduler({Momentum: Schedule([0, 1], [0.9, 1.2])}, on_mismatch="hold")
    learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), callbacks=[ok]).fit(1)
    bad = Scheduler({Momentum: Schedule([0, 1], [0.5, -1.5])})  # -0.5 at the last step, epoch 0.5
    with pytest.raises(ValueError, match=r"would write -0.5 .*negative momentum"):
        learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9), callbacks=[bad]).fit(1)


def test_a_batch_size_of_zero_is_refused_not_clamped():
    dataset = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=ScheduledBatchSampler(8, batch_size=4))
    steps = Steps()
    scheduler = Scheduler({BatchSize: Schedule([0, 1], [4, 0])}, per="epoch")
    learner = learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.01), data=loader, callbacks=[scheduler, steps])
    with pytest.raises(ValueError, match=r"BatchSize.*would write 0 to BatchSize.*\[1, inf\)"):
        learner.fit(2)
    assert steps.n == 0 and scheduler.history["BatchSize"] == []


def test_batch_size_history_records_the_rounded_value_applied():
    dataset = torch.utils.data.TensorDataset(torch.randn(12, 3), torch.randn(12, 1))
    sampler = ScheduledBatchSampler(12, batch_size=4)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    scheduler = Scheduler({BatchSize: Schedule([0, 2], [2.4, 3.6])}, per="epoch")  # 2.4 and 3.0 scheduled
    learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.01), data=loader, callbacks=[scheduler]).fit(2)
    assert scheduler.history["BatchSize"] == [2.0, 3.0] and sampler.batch_size == 3


def test_an_attribute_can_declare_a_domain():
    class Loss(torch.nn.Module):
        smoothing = 0.1

        def forward(self, pred, target):
            return torch.nn.functional.mse_loss(pred, target)

    scheduler = Scheduler({Attribute("loss_fn.smoothing", domain=Domain(0.0, 1.0)): Schedule([0, 0.5], [0.1, 1.5])})
    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), Loss(), callbacks=[scheduler])
    with pytest.raises(ValueError, match=r"loss_fn.smoothing.*would write 1.5.*\[0, 1\]"):
        learner.fit(1)


def test_the_message_names_the_group_written():
    def opt(model):
        return torch.optim.SGD(
            [{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias], "weight_decay": 0.05}]
        )

    scheduler = Scheduler({WeightDecay: Schedule([0, 0.5], [0.2, -0.2])})
    with pytest.raises(ValueError, match=r"param group 0 weight_decay"):
        learner_for(opt, callbacks=[scheduler]).fit(1)
    group1 = Scheduler({WeightDecay(group=1): Schedule([0, 0.5], [0.2, -0.2])})
    with pytest.raises(ValueError, match=r"param group 1 weight_decay"):
        learner_for(opt, callbacks=[group1]).fit(1)


def test_dropout_domain():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.1), torch.nn.Linear(3, 1))
    scheduler = Scheduler({DropoutRate: Schedule([0, 0.5], [0.1, 1.1])})
    with pytest.raises(ValueError, match=r"DropoutRate.*would write 1.1.*\[0, 1\]"):
        learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), model=model, callbacks=[scheduler]).fit(1)


def test_a_custom_annealing_is_checked_before_the_write():
    # The range of a custom annealing is unknown up front, so values are checked block by block before any is
    # written: the fit stops before the step that would have used the bad value, and no bad value is recorded.
    def overshoot(p):
        return 3.0 * p  # from 0.1 towards 0.05: 0.1 - 0.15 p, negative from p = 2/3

    steps = Steps()
    scheduler = Scheduler({LearningRate: Schedule([0, 1], [0.1, 0.05], anneal=overshoot)})
    learner = learner_for(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), n_batches=6, callbacks=[scheduler, steps])
    with pytest.raises(ValueError, match=r"would write -0.0.*param group 0 lr"):
        learner.fit(1)
    assert steps.n == 0 and all(g["lr"] >= 0 for g in learner.optimizer.param_groups)


def test_a_custom_type_declares_its_domain():
    class Temperature(HyperParameter):
        writes = ("loss_fn.temperature",)
        domain = Domain(0.0, low_open=True, why="a temperature divides the logits")

        def set(self, learner, value):
            learner.loss_fn.temperature = value

    class Loss(torch.nn.Module):
        temperature = 1.0

        def forward(self, pred, target):
            return torch.nn.functional.mse_loss(pred / self.temperature, target)

    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    scheduler = Scheduler({Temperature: Schedule([0, 1], [1.0, 0.0], unit="fraction")}, on_mismatch="hold")
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), Loss(), callbacks=[scheduler])
    learner.fit(1)  # the last step is at fraction 0.5: temperature 0.5, inside (0, inf)
    scheduler = Scheduler({Temperature: Schedule([0, 2], [1.0, 0.0])}, on_mismatch="stretch")
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), Loss(), callbacks=[scheduler])
    learner.fit(2)  # stretched over the fit: the last step (epoch 1.5) is at 0.25
    assert scheduler.history["Temperature"] == pytest.approx([1.0, 0.75, 0.5, 0.25], rel=1e-15)
    scheduler = Scheduler({Temperature: Schedule([0, 0.5], [1.0, 0.0])})
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), Loss(), callbacks=[scheduler])
    with pytest.raises(ValueError, match=r"would write 0 to Temperature.*\(0, inf\).*divides the logits"):
        learner.fit(1)


def test_domain_membership_and_text():
    beta, not_a_number = Domain(0.0, 1.0, high_open=True), math.nan
    assert (0.0 in beta, 0.999 in beta, 1.0 in beta, -1e-300 in beta, not_a_number in beta) == (
        True,
        True,
        False,
        False,
        False,
    )
    assert str(beta) == "[0, 1)" and str(Domain()) == "(-inf, inf)" and str(Domain(0.0, low_open=True)) == "(0, inf)"
    assert float("inf") not in Domain()


# ----------------------------------------------------------------------------------------------- groups added mid-fit
class Unfreeze(Callback):
    """Adds the body as a new param group at lr ``x`` at the start of epoch ``epoch`` (the common fine-tune)."""

    reads = ("epoch",)
    writes = ("optimizer.param_groups",)

    def __init__(self, params, epoch, x):
        self.params, self.epoch, self.x = list(params), epoch, x

    def before_epoch(self, learner):
        if learner.epoch == self.epoch:
            learner.optimizer.add_param_group({"params": self.params, "lr": self.x})


class SeenGroups(Callback):
    reads = ("optimizer",)

    def __init__(self):
        self.lrs = []

    def before_step(self, learner):
        self.lrs.append([g["lr"] for g in learner.optimizer.param_groups])


def two_part_model():
    torch.manual_seed(0)
    body, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    return body, head, torch.nn.Sequential(body, head)


def test_a_group_added_during_the_fit_follows_the_schedule_at_its_ratio():
    # lr 1 -> 0 over 4 epochs of 2 batches. The body joins at epoch 2 at x = 0.1, when the last value set was
    # y = 1 - 1.5/4 = 0.625: it moves as 0.1/0.625 = 0.16 times the schedule (0.08 at epoch 2.0, 0.06 at 2.5, ...).
    body, head, model = two_part_model()
    seen, scheduler = SeenGroups(), Scheduler({LearningRate: Schedule([0, 4], [1.0, 0.0])})
    opt = torch.optim.SGD(head.parameters(), lr=1.0)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    Learner(
        model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, seen, Unfreeze(body.parameters(), 2, 0.1)]
    ).fit(4)
    head_lrs = [1.0 - (k / 2) / 4 for k in range(8)]
    assert [lrs[0] for lrs in seen.lrs] == pytest.approx(head_lrs, rel=1e-15)
    assert [len(lrs) for lrs in seen.lrs] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [lrs[1] for lrs in seen.lrs[4:]] == pytest.approx([0.16 * v for v in head_lrs[4:]], rel=1e-14)
    assert seen.lrs[4][1] == pytest.approx(0.08, rel=1e-14) and seen.lrs[7][1] == pytest.approx(0.02, rel=1e-14)


def test_an_added_group_that_would_leave_the_domain_is_refused_before_the_write():
    # Adam's beta1 scheduled 0.9 -> 0.95; a group added at beta1 0.99 while the schedule stands at 0.9 would
    # follow at ratio 1.1; the fit's last step (epoch 1.5) has the schedule at 0.925, written as 1.0175 >= 1.
    body, head, model = two_part_model()

    class AddBetas(Unfreeze):
        def before_epoch(self, learner):
            if learner.epoch == self.epoch:
                learner.optimizer.add_param_group({"params": self.params, "betas": (0.99, 0.999)})

    scheduler = Scheduler({Momentum: Schedule([0, 1, 2], [0.9, 0.9, 0.95])})
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    learner = Learner(
        model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, AddBetas(body.parameters(), 1, 0)]
    )
    with pytest.raises(
        ValueError, match=r"param group 1, added during the fit at momentum=0.99.*ratio 1.1.*1.0175.*\[0, 1\)"
    ):
        learner.fit(2)
    assert opt.param_groups[1]["betas"] == (0.99, 0.999)


def test_groups_may_be_added_but_not_removed():
    body, head, model = two_part_model()
    opt = torch.optim.SGD([{"params": head.parameters()}, {"params": body.parameters()}], lr=0.1)

    class Remove(Callback):
        writes = ("optimizer.param_groups",)

        def before_epoch(self, learner):
            if learner.epoch == 1:
                del learner.optimizer.param_groups[1]

    scheduler = Scheduler({LearningRate: Schedule([0, 2], [0.1, 0.0])})
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    with pytest.raises(RuntimeError, match=r"lost param groups.*2 -> 1"):
        Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, Remove()]).fit(2)


# ----------------------------------------------------------------------------------------------- writes touch only what they name
def test_momentum_keeps_beta2_and_the_container_type():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    scheduler = Scheduler({Momentum: Schedule([0, 1], [0.95, 0.85])})
    learner_for(lambda m: opt, callbacks=[scheduler], model=model).fit(1)
    betas = opt.param_groups[0]["betas"]
    assert type(betas) is tuple and betas == (scheduler.history["momentum"][-1], 0.98)
    assert scheduler.history["momentum"] == pytest.approx([0.95, 0.9], rel=1e-15)


def test_tensor_valued_options_are_filled_in_place():
    # torch accepts a tensor lr and tensor betas (for capturable / compiled steps); a write must keep the tensor
    # object, its dtype and device, or a captured graph would keep reading the old one.
    model = torch.nn.Linear(3, 1)
    lr, beta1, beta2 = torch.tensor(0.01), torch.tensor(0.9), torch.tensor(0.999)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, beta2))
    group = opt.param_groups[0]
    lr, betas = group["lr"], group["betas"]
    scheduler = Scheduler({LearningRate: Schedule([0, 1], [0.02, 0.01]), Momentum: Schedule([0, 1], [0.8, 0.9])})
    learner_for(lambda m: opt, callbacks=[scheduler], model=model).fit(1)
    assert group["lr"] is lr and group["betas"] is betas and betas[0].dtype == torch.float32
    assert lr.item() == pytest.approx(0.015, rel=1e-6) and betas[0].item() == pytest.approx(0.85, rel=1e-6)
    assert betas[1].item() == pytest.approx(0.999, rel=1e-7)


def test_scheduling_one_group_leaves_the_others_alone():
    body, head, model = two_part_model()
    opt = torch.optim.SGD([{"params": body.parameters(), "lr": 0.01}, {"params": head.parameters(), "lr": 0.1}])
    scheduler = Scheduler({LearningRate(group=1): Schedule([0, 1], [0.5, 0.25])})
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler]).fit(1)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[1]["lr"] == 0.375


def test_an_int_attribute_stays_an_int():
    class Loss(torch.nn.Module):
        k = 4

        def forward(self, pred, target):
            assert isinstance(self.k, int)
            return torch.nn.functional.mse_loss(pred, target)

    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 4
    scheduler = Scheduler({Attribute("loss_fn.k"): Schedule([0, 1], [4.0, 2.0])})
    loss = Loss()
    Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), loss, callbacks=[scheduler]).fit(1)
    assert scheduler.history["loss_fn.k"] == [4.0, 4.0, 3.0, 2.0]  # 4, 3.5 -> 4 (half to even), 3, 2.5 -> 2
    assert loss.k == 2 and isinstance(loss.k, int)


# ----------------------------------------------------------------------------------------------- set-up mistakes
def test_a_hyperparameter_without_set_fails_when_the_scheduler_is_built():
    class Forgot(HyperParameter):
        writes = ("loss_fn.margin",)

    with pytest.raises(TypeError, match=r"Forgot does not implement set.*define Forgot.set"):
        Scheduler({Forgot: Schedule([0, 1], [1.0, 0.0])})


def test_a_hyperparameter_without_writes_fails_when_the_scheduler_is_built():
    class Silent(HyperParameter):
        def set(self, learner, value):
            pass

    with pytest.raises(TypeError, match=r"Silent declares no writes"):
        Scheduler({Silent: Schedule([0, 1], [1.0, 0.0])})


def test_an_undeclared_write_points_to_the_hyperparameters_writes():
    class Swap(HyperParameter):
        writes = ("loss_fn.scale",)

        def set(self, learner, value):
            learner.loss_fn = torch.nn.functional.l1_loss

    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(4, 3), torch.randn(4, 1))] * 2

    def fit():
        scheduler = Scheduler({Swap(): Schedule([0, 1], [1.0, 0.0])})
        Learner(
            model,
            data,
            torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.functional.mse_loss,
            callbacks=[scheduler],
        ).fit(1)

    with pytest.raises(UndeclaredWriteError, match=r"Swap.set rebound learner.loss_fn.*add 'loss_fn' to Swap.writes"):
        fit()
    Swap.writes = ("loss_fn", "loss_fn.scale")  # the fix the message names works
    fit()


def test_a_clipping_threshold_reaching_zero_is_refused_before_training():
    from loopkit.callbacks import GradientClip
    from loopkit.callbacks.gradient_clip import ClipThreshold

    steps = Steps()
    scheduler = Scheduler({ClipThreshold: Schedule([0, 0.5], [1.0, 0.0])})
    learner = learner_for(
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1), callbacks=[GradientClip(max_norm=1.0), scheduler, steps]
    )
    with pytest.raises(ValueError, match=r"schedule for clip.*would write 0 to clip.*\(0, inf\).*positive"):
        learner.fit(1)
    assert steps.n == 0
