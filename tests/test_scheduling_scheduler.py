"""The Scheduler callback end to end: what the optimizer really sees each step, history, horizons, resume."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from loopkit import Callback, Learner
from loopkit.schedules import Schedule, steps
from loopkit.scheduling.hyperparams import Attribute, HyperParameter
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum, WeightDecay
from loopkit.scheduling.scheduler import Scheduler


class SeenLR(Callback):
    """Records the lr and momentum each optimizer step actually used (read just before the step)."""

    reads = ("optimizer",)

    def __init__(self):
        self.lr, self.momentum = [], []

    def before_step(self, learner):
        group = learner.optimizer.param_groups[0]
        self.lr.append(group["lr"])
        self.momentum.append(group.get("momentum", group.get("betas", (None,))[0]))


def make(n_batches=5, callbacks=(), optimizer="sgd", data=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    if data is None:
        data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(n_batches)]
    return Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=list(callbacks))


def test_values_applied_each_step_equal_the_schedule_curve_bit_for_bit():
    sched = Schedule([0, 1.5, 4], [0.01, 0.1, 1e-4], anneal=["linear", "cos"])
    scheduler, seen = Scheduler({LearningRate: sched}), SeenLR()
    make(7, [scheduler, seen]).fit(4)
    curve = sched.values(28, steps_per_epoch=7, n_epochs=4)
    assert seen.lr == scheduler.history["lr"] == curve.tolist()


def test_the_first_batch_sees_the_value_at_time_zero_and_epochs_are_fractional():
    # Linear from 1.0 at epoch 0 to 0.0 at epoch 2, 4 batches per epoch: epoch position e + b/4.
    scheduler, seen = Scheduler({LearningRate: Schedule([0, 2], [1.0, 0.0])}), SeenLR()
    make(4, [scheduler, seen]).fit(2)
    expected = [1.0 - (e + b / 4) / 2 for e in range(2) for b in range(4)]
    assert seen.lr == pytest.approx(expected, rel=1e-15)
    assert seen.lr[0] == 1.0


def test_step_knots_are_evaluated_at_the_integer_step():
    # Warm up over 3 steps, then hold: value at step k is min(k, 3) / 3 * 0.3.
    scheduler, seen = Scheduler({LearningRate: Schedule([0, 3], [0.0, 0.3], unit="step")}), SeenLR()
    make(4, [scheduler, seen]).fit(2)
    assert seen.lr == pytest.approx([min(k, 3) / 3 * 0.3 for k in range(8)], rel=1e-15)


def test_two_hyperparameters_and_weight_decay_move_together():
    lr = Schedule([0, 1], [0.1, 0.2])
    mom = Schedule([0, 1], [0.95, 0.85])
    wd = Schedule([0, 1], [0.0, 1e-2], unit="fraction")
    scheduler, seen = Scheduler({LearningRate: lr, Momentum: mom, WeightDecay: wd}), SeenLR()
    learner = make(4, [scheduler, seen])
    learner.fit(1)
    assert seen.momentum == pytest.approx([0.95 - 0.1 * b / 4 for b in range(4)], rel=1e-14)
    assert scheduler.history["weight_decay"] == pytest.approx([1e-2 * b / 4 for b in range(4)], rel=1e-14)
    assert learner.optimizer.param_groups[0]["weight_decay"] == scheduler.history["weight_decay"][-1]


def test_adam_momentum_is_beta1():
    scheduler, seen = Scheduler({Momentum: Schedule([0, 1], [0.95, 0.85])}), SeenLR()
    learner = make(2, [scheduler, seen], optimizer="adamw")
    learner.fit(1)
    assert seen.momentum == pytest.approx([0.95, 0.90], rel=1e-15)
    assert learner.optimizer.param_groups[0]["betas"][1] == 0.999


def test_param_group_ratios_are_kept_through_a_schedule():
    torch.manual_seed(0)
    body, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(body, head)
    opt = torch.optim.SGD([{"params": body.parameters(), "lr": 0.01}, {"params": head.parameters(), "lr": 0.1}])
    seen = []

    class Groups(Callback):
        reads = ("optimizer",)

        def before_step(self, learner):
            seen.append([g["lr"] for g in learner.optimizer.param_groups])

    scheduler = Scheduler({LearningRate: Schedule([0, 1], [1.0, 0.5])})
    data = [(torch.randn(2, 3), torch.randn(2, 1))] * 4
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, Groups()]).fit(1)
    for (body_lr, head_lr), value in zip(seen, scheduler.history["lr"]):
        assert head_lr == value
        assert body_lr == pytest.approx(value * 0.1, rel=1e-15)


def test_attribute_and_custom_types_are_scheduled_and_recorded():
    class Temperature(HyperParameter):
        writes = ("loss_fn.temperature",)

        def set(self, learner, value):
            learner.loss_fn.temperature = value

    class TempLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature, self.margin, self.seen = 1.0, 1.0, []

        def forward(self, pred, target):
            self.seen.append((self.temperature, self.margin))
            return torch.nn.functional.mse_loss(pred / self.temperature, target)

    loss = TempLoss()
    scheduler = Scheduler(
        {
            Temperature: Schedule([0, 1], [1.0, 0.5]),
            Attribute("loss_fn.margin"): Schedule([0, 1], [0.0, 2.0], anneal="cos"),
        }
    )
    model = torch.nn.Linear(3, 1)
    data = [(torch.randn(2, 3), torch.randn(2, 1))] * 4
    Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.01), loss, callbacks=[scheduler]).fit(1)
    temps = [1.0 - 0.5 * b / 4 for b in range(4)]
    margins = [2.0 * (1 - math.cos(math.pi * b / 4)) / 2 for b in range(4)]
    assert [t for t, _ in loss.seen] == pytest.approx(temps, rel=1e-14)
    assert [m for _, m in loss.seen] == pytest.approx(margins, rel=1e-14, abs=1e-15)
    assert scheduler.history == {"Temperature": [t for t, _ in loss.seen], "loss_fn.margin": [m for _, m in loss.seen]}


def test_per_epoch_samples_the_curve_at_each_epochs_first_batch():
    scheduler, seen = Scheduler({LearningRate: Schedule([0, 4], [1.0, 0.2])}, per="epoch"), SeenLR()
    make(3, [scheduler, seen]).fit(4)
    per_epoch = [1.0 - 0.8 * e / 4 for e in range(4)]
    assert scheduler.history["lr"] == pytest.approx(per_epoch, rel=1e-15)
    assert seen.lr == pytest.approx([v for v in per_epoch for _ in range(3)], rel=1e-15)


def test_mixed_units_warm_up_in_steps_then_anneal_in_epochs():
    sched = Schedule([0, steps(2), 3], [0.0, 1.0, 0.0])
    scheduler, seen = Scheduler({LearningRate: sched}), SeenLR()
    make(4, [scheduler, seen]).fit(3)
    # steps(2) with 4 batches per epoch is epoch 0.5.
    expected = []
    for k in range(12):
        t = k // 4 + (k % 4) / 4
        expected.append(t / 0.5 if t <= 0.5 else 1.0 - (t - 0.5) / 2.5)
    assert seen.lr == pytest.approx(expected, rel=1e-13, abs=1e-16)


def test_data_without_length_needs_step_knots():
    data = [(torch.randn(2, 3), torch.randn(2, 1))] * 3

    class Stream:
        def __iter__(self):
            return iter(data)

    with pytest.raises(ValueError, match=r"no length.*unit='step'"):
        make(callbacks=[Scheduler({LearningRate: Schedule([0, 1], [1.0, 0.0])})], data=Stream()).fit(1)
    scheduler = Scheduler({LearningRate: Schedule([0, 4], [1.0, 0.0], unit="step")})
    make(callbacks=[scheduler], data=Stream()).fit(2)
    assert scheduler.history["lr"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0], rel=1e-15)


# ----------------------------------------------------------------------------------------------- horizons
def test_a_schedule_longer_than_the_fit_is_an_error_by_default():
    with pytest.raises(ValueError, match=r"ends at 10 epochs but the fit ends at 2.*on_mismatch='stretch'"):
        make(callbacks=[Scheduler({LearningRate: Schedule([0, 10], [1.0, 0.0])})]).fit(2)


def test_stretch_compresses_and_hold_cuts_off():
    stretch = Scheduler({LearningRate: Schedule([0, 10], [1.0, 0.0])}, on_mismatch="stretch")
    make(5, [stretch]).fit(2)
    assert stretch.history["lr"] == pytest.approx([1.0 - k / 10 for k in range(10)], rel=1e-14)
    hold = Scheduler({LearningRate: Schedule([0, 10], [1.0, 0.0])}, on_mismatch="hold")
    make(5, [hold]).fit(2)
    assert hold.history["lr"] == pytest.approx([1.0 - k / 50 for k in range(10)], rel=1e-14)


def test_a_schedule_shorter_than_the_fit_holds_its_last_value():
    scheduler = Scheduler({LearningRate: Schedule([0, 1], [0.0, 1.0])})
    make(2, [scheduler]).fit(3)
    assert scheduler.history["lr"] == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------------------------- resume
class Snap(Callback):
    reads = ("global_step",)

    def __init__(self, at):
        self.at, self.state = at, None

    def after_batch(self, learner):
        if learner.phase == "train" and learner.global_step == self.at:
            self.state = copy.deepcopy(learner.state_dict())


def _scheduled_run(n_epochs, snap_at=None, resume=None, on_mismatch="error"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(5)]
    scheduler = Scheduler(
        {
            LearningRate: Schedule([0, 1, 4], [0.01, 0.1, 0.0], anneal="cos"),
            Momentum: Schedule([0, 1, 4], [0.95, 0.85, 0.95], anneal="cos"),
        },
        on_mismatch=on_mismatch,
    )
    snap = Snap(snap_at)
    if resume is not None:
        torch.manual_seed(77)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, snap]).fit(
        n_epochs, resume_from=resume
    )
    return model, scheduler, snap.state


@pytest.mark.parametrize("at", [3, 5, 12])
def test_resume_continues_the_schedule_and_weights_exactly(at):
    model, scheduler, state = _scheduled_run(4, snap_at=at)
    model2, scheduler2, _ = _scheduled_run(4, resume=state)
    assert scheduler2.history == scheduler.history
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_resuming_into_a_longer_fit_is_an_error_unless_a_policy_is_named():
    _, _, state = _scheduled_run(4, snap_at=7)
    with pytest.raises(ValueError, match=r"\(6, 5\) but the checkpoint's schedule was laid out for \(4, 5\)"):
        _scheduled_run(6, resume=state)


def test_stretch_on_resume_is_continuous_and_ends_at_the_new_end():
    _, straight, state = _scheduled_run(4, snap_at=7)
    _, stretched, _ = _scheduled_run(6, resume=state, on_mismatch="stretch")
    lr = stretched.history["lr"]
    assert lr[:7] == straight.history["lr"][:7]
    # From epoch 1.4 (step 7) the rest of the schedule, epochs 1.4..4, is spread over epochs 1.4..6.
    sched = Schedule([0, 1, 4], [0.01, 0.1, 0.0], anneal="cos").bind(steps_per_epoch=5, n_epochs=4)
    for k in range(7, 30):
        t = k / 5
        assert lr[k] == pytest.approx(sched(1.4 + (t - 1.4) * (4 - 1.4) / (6 - 1.4)), rel=1e-12, abs=1e-15)
    assert len(lr) == 30


def test_hold_on_resume_keeps_the_timing_and_holds_the_last_value():
    _, straight, state = _scheduled_run(4, snap_at=7)
    _, held, _ = _scheduled_run(6, resume=state, on_mismatch="hold")
    assert held.history["lr"][:20] == straight.history["lr"]
    assert held.history["lr"][20:] == [0.0] * 10


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "schedules, error, message",
    [
        ({}, TypeError, "non-empty mapping"),
        ([LearningRate], TypeError, "non-empty mapping"),
        ({"lr": Schedule([0, 1], [0, 1])}, TypeError, "'lr' is not a HyperParameter"),
        ({LearningRate: 0.1}, TypeError, "must be a Schedule, got 0.1"),
        (
            {LearningRate: Schedule([0, 1], [0, 1]), LearningRate(): Schedule([0, 1], [0, 1])},
            ValueError,
            "two schedules for lr",
        ),
    ],
)
def test_bad_scheduler_arguments(schedules, error, message):
    with pytest.raises(error, match=message):
        Scheduler(schedules)


def test_bad_options_are_quoted():
    with pytest.raises(ValueError, match="per='batches'"):
        Scheduler({LearningRate: Schedule([0, 1], [0, 1])}, per="batches")
    with pytest.raises(ValueError, match="on_mismatch='drift'"):
        Scheduler({LearningRate: Schedule([0, 1], [0, 1])}, on_mismatch="drift")


def test_a_missing_target_fails_when_the_learner_is_built():
    with pytest.raises(AttributeError, match="has no attribute 'margin'"):
        make(callbacks=[Scheduler({Attribute("loss_fn.margin"): Schedule([0, 1], [0, 1])})])


def test_two_schedulers_on_the_same_value_clash_and_on_different_values_do_not():
    from loopkit import OrderingError

    class OtherScheduler(Scheduler):
        pass

    lr = Schedule([0, 1], [0.1, 0.0])
    with pytest.raises(OrderingError, match=r"both write 'optimizer.lr'"):
        make(callbacks=[Scheduler({LearningRate: lr}), OtherScheduler({LearningRate: lr})])
    make(callbacks=[Scheduler({LearningRate: lr}), OtherScheduler({Momentum: lr})]).fit(1)


def test_history_is_a_numpy_free_list_of_floats():
    scheduler = Scheduler({LearningRate: Schedule([0, 1], [0.1, 0.0])})
    make(2, [scheduler]).fit(1)
    assert all(type(v) is float for v in scheduler.history["lr"])
    assert not isinstance(scheduler.history["lr"], np.ndarray)


# ----------------------------------------------------------------------------------------------- policies do what the docs say
def test_stretch_extends_a_schedule_shorter_than_the_fit():
    # Issue 11, section 2: Schedule([0, 5], [1, 0]) stretched over fit(10) with 2 batches an epoch is the line
    # from 1 at epoch 0 to 0 at epoch 10: 0.5 at epoch 5's first batch, 0.05 at the last step (epoch 9.5).
    scheduler = Scheduler({LearningRate: Schedule([0, 5], [1.0, 0.0])}, on_mismatch="stretch")
    make(2, [scheduler]).fit(10)
    lr = scheduler.history["lr"]
    assert len(lr) == 20
    assert lr[10] == pytest.approx(0.5, rel=1e-15)
    assert lr[19] == pytest.approx(0.05, rel=1e-14)
    assert lr == pytest.approx([1.0 - (k / 2) / 10 for k in range(20)], rel=1e-14)


def test_stretch_extends_step_schedules_too():
    # 4 steps laid over a 12-step fit: step k is at schedule step k / 3.
    scheduler = Scheduler({LearningRate: Schedule([0, 4], [1.0, 0.0], unit="step")}, on_mismatch="stretch")
    make(4, [scheduler]).fit(3)
    assert scheduler.history["lr"] == pytest.approx([1.0 - k / 12 for k in range(12)], rel=1e-14)


def test_stretch_needs_a_known_fit_length():
    class Stream:
        def __iter__(self):
            return iter([(torch.randn(2, 3), torch.randn(2, 1))] * 3)

    scheduler = Scheduler({LearningRate: Schedule([0, 4], [1.0, 0.0], unit="step")}, on_mismatch="stretch")
    with pytest.raises(ValueError, match=r"stretch.*no length"):
        make(callbacks=[scheduler], data=Stream()).fit(1)


def test_a_knot_at_zero_means_the_same_in_every_unit():
    # Issue 15, section 9: Schedule([0, steps(20)], ...) on data without a length is a step schedule.
    class Stream:
        def __iter__(self):
            return iter([(torch.randn(2, 3), torch.randn(2, 1))] * 5)

    scheduler = Scheduler({LearningRate: Schedule([0, steps(20)], [0.0, 1.0])})
    make(callbacks=[scheduler], data=Stream()).fit(2)
    assert scheduler.history["lr"] == pytest.approx([k / 20 for k in range(10)], rel=1e-15, abs=0)


def test_per_epoch_is_applied_before_the_epoch_and_once():
    scheduler, seen = Scheduler({LearningRate: Schedule([0, 3], [1.0, 0.4])}, per="epoch"), SeenLR()
    make(2, [scheduler, seen]).fit(3)
    assert scheduler.history["lr"] == pytest.approx([1.0, 0.8, 0.6], rel=1e-15)
    assert seen.lr == pytest.approx([1.0, 1.0, 0.8, 0.8, 0.6, 0.6], rel=1e-15)


# ----------------------------------------------------------------------------------------------- long epochs
def test_long_epochs_are_evaluated_in_blocks_with_the_same_values():
    # 3,000 batches an epoch: values come in blocks of BLOCK, and equal Schedule.values bit for bit.
    from loopkit.scheduling.tracks import BLOCK

    sched = Schedule([0, 0.3, 1], [0.0, 1.0, 1e-3], anneal=["linear", "cos"])
    scheduler = Scheduler({LearningRate: sched})
    data = [(torch.zeros(1, 3), torch.zeros(1, 1))] * 3000
    learner = make(callbacks=[scheduler], data=data)
    learner.n_epochs, learner.n_batches, learner.epoch, learner.phase = 1, 3000, 0, "train"
    scheduler.before_fit(learner)
    scheduler.before_train(learner)
    assert all(len(track.block) == 0 for track in scheduler._tracks)  # nothing evaluated before the first step
    for b in range(3000):
        learner.batch_idx = learner.global_step = b
        scheduler.before_batch(learner)
        assert all(len(track.block) <= BLOCK for track in scheduler._tracks)
    assert scheduler.history["lr"] == sched.values(3000, steps_per_epoch=3000, n_epochs=1).tolist()
