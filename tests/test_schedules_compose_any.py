"""Composition of every schedule (issue 25, point 1): join, shift, repeat, stretch and scale accept torch's
endless decays (step_lr, exponential_lr), products and a user's own schedule object.

The reference for a warmup followed by a decay counted from the warmup's end is torch's SequentialLR over
LinearLR/ConstantLR and StepLR/ExponentialLR/MultiStepLR, stepping a real SGD optimizer in the test. torch multiplies
the previous lr by a ratio each step where loopkit evaluates a closed form, so values agree to rounding: 1e-12
relative.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

from loopkit import Callback, Learner
from loopkit.schedules import (
    Schedule,
    constant_lr,
    exponential_lr,
    join,
    linear_lr,
    multistep_lr,
    polynomial_lr,
    product,
    repeat,
    scale,
    shift,
    step_lr,
    stretch,
)
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from loopkit.scheduling.scheduler import Scheduler

BASE = 0.05
REL = 1e-12


def torch_lrs(make, n, base=BASE):
    """The lr an SGD optimizer holds before each of n steps, torch's scheduler stepped after each."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    scheduler = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def assert_close(ours, reference):
    assert len(ours) == len(reference)
    for k, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=REL, abs=1e-300), f"step {k}: {a!r} != {b!r}"


SEQUENTIAL = {
    "linear warmup, then StepLR": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=5), L.StepLR(o, 3, 0.5)], milestones=[5]),
        join([linear_lr(BASE, 0.1, total_iters=5), step_lr(BASE, 3, 0.5)], [5]),
    ),
    "linear warmup, then ExponentialLR": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.01, total_iters=10), L.ExponentialLR(o, 0.9)], milestones=[10]),
        join([linear_lr(BASE, 0.01, total_iters=10), exponential_lr(BASE, 0.9)], [10]),
    ),
    "constant warmup, StepLR, then ExponentialLR": (
        lambda o: L.SequentialLR(
            o, [L.ConstantLR(o, 0.25, total_iters=2), L.StepLR(o, 2, 0.3), L.ExponentialLR(o, 0.8)], milestones=[3, 9]
        ),
        join([constant_lr(BASE, 0.25, total_iters=2), step_lr(BASE, 2, 0.3), exponential_lr(BASE, 0.8)], [3, 9]),
    ),
    "linear warmup, then MultiStepLR": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.5, total_iters=4), L.MultiStepLR(o, [3, 7], 0.1)], [4]),
        join([linear_lr(BASE, 0.5, total_iters=4), multistep_lr(BASE, [3, 7], 0.1)], [4]),
    ),
    "linear warmup, then PolynomialLR": (
        lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.2, total_iters=3), L.PolynomialLR(o, 10, 2.0)], [3]),
        join([linear_lr(BASE, 0.2, total_iters=3), polynomial_lr(BASE, 10, 2.0)], [3]),
    ),
}


@pytest.mark.parametrize("case", sorted(SEQUENTIAL))
def test_a_warmup_then_a_decay_counted_from_its_end_matches_torch_sequential_lr(case):
    make, ours = SEQUENTIAL[case]
    assert_close(ours.values(25).tolist(), torch_lrs(make, 25))


def test_the_scheduler_applies_a_joined_endless_decay_as_torch_does():
    make, schedule = SEQUENTIAL["linear warmup, then StepLR"]
    model = torch.nn.Linear(1, 1)
    sched = Scheduler({LearningRate: schedule})
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * 10
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched]).fit(3)  # endless: any length fits
    assert_close(sched.history["lr"], torch_lrs(make, 30))


# Every torch preset, its torch scheduler, and the schedule's values at whole steps (for shift and repeat).
PRESETS = {
    "step_lr": (step_lr(BASE, 3, 0.5), lambda o: L.StepLR(o, 3, 0.5)),
    "exponential_lr": (exponential_lr(BASE, 0.9), lambda o: L.ExponentialLR(o, 0.9)),
    "multistep_lr": (multistep_lr(BASE, [2, 5], 0.1), lambda o: L.MultiStepLR(o, [2, 5], 0.1)),
    "linear_lr": (linear_lr(BASE, 0.25, total_iters=4), lambda o: L.LinearLR(o, 0.25, total_iters=4)),
    "constant_lr": (constant_lr(BASE, 0.5, total_iters=3), lambda o: L.ConstantLR(o, 0.5, total_iters=3)),
    "polynomial_lr": (polynomial_lr(BASE, 6, 2.0), lambda o: L.PolynomialLR(o, 6, 2.0)),
    "product": (
        product(linear_lr(BASE, 0.5, total_iters=2), step_lr(1.0, 3, 0.5)),
        lambda o: L.ChainedScheduler([L.LinearLR(o, 0.5, total_iters=2), L.StepLR(o, 3, 0.5)]),
    ),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_torch_preset_shifts(name):
    schedule, make = PRESETS[name]
    reference = torch_lrs(make, 20)
    # shifted by 4 steps: the first value until step 4, then torch's curve from its step 0 (optax transition_begin)
    assert_close(shift(schedule, 4).values(24).tolist(), [reference[0]] * 4 + reference)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_torch_preset_repeats_with_a_period(name):
    schedule, make = PRESETS[name]
    reference = torch_lrs(make, 7)
    # three cycles of the first 7 steps, each half the last, then the end of the last cycle (its step 7) holds
    ours = repeat(schedule, 3, period=7, decay=0.5).values(24).tolist()
    after = 0.25 * torch_lrs(make, 8)[7]
    expected = reference + [0.5 * v for v in reference] + [0.25 * v for v in reference] + [after] * 3
    assert_close(ours, expected)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_torch_preset_joins_after_a_warmup_and_before_a_constant(name):
    schedule, make = PRESETS[name]
    reference = torch_lrs(make, 10)
    warm = Schedule([0, 5], [0.0, BASE], unit="step")
    tail = Schedule([0], [1e-4], unit="step")
    ours = join([warm, schedule, tail], [5, 15]).values(20).tolist()
    expected = [BASE * k / 5 for k in range(5)] + reference + [1e-4] * 5
    assert_close(ours, expected)


def test_stretch_and_scale_apply_to_an_endless_decay():
    reference = torch_lrs(lambda o: L.StepLR(o, 6, 0.5), 24)  # step_size 3 stretched twice
    assert_close(stretch(step_lr(BASE, 3, 0.5), 2).values(24).tolist(), reference)
    assert_close(
        scale(exponential_lr(1.0, 0.9), BASE).values(12).tolist(), torch_lrs(lambda o: L.ExponentialLR(o, 0.9), 12)
    )


def test_repeat_with_period_mult_sees_each_cycle_slower():
    # cycles of 4 and 8 steps; the second sees step_lr's time at half speed: step_size 2 becomes 4
    ours = repeat(step_lr(1.0, 2, 0.5), 2, period=4, period_mult=2).values(14).tolist()
    assert ours == [1.0, 1.0, 0.5, 0.5] + [1.0] * 4 + [0.5] * 4 + [0.25] * 2


def test_a_composition_of_endless_parts_has_the_right_horizon():
    joined = join([linear_lr(BASE, 0.1, total_iters=5), step_lr(BASE, 3)], [5]).bind()
    assert joined.horizon == math.inf and joined.open_from == 5.0  # the fit may end anywhere after the warmup
    assert shift(step_lr(BASE, 3), 4).bind().open_from == 4.0
    repeated = repeat(step_lr(BASE, 3), 2, period=6).bind()
    assert (repeated.horizon, repeated.open_from) == (12.0, 12.0)  # played to its end, like any repeat


def test_composition_refuses_what_it_cannot_compose_quoting_the_value():
    with pytest.raises(ValueError, match=r"pass period=, the length of one cycle"):
        repeat(step_lr(BASE, 3), 2)
    with pytest.raises(TypeError, match=r"join needs schedules \(objects with a bind method\), got 0.1"):
        join([step_lr(BASE, 3), 0.1], [5])
    with pytest.raises(ValueError, match=r"repeat\(period=-1\)"):
        repeat(step_lr(BASE, 3), 2, period=-1)
    with pytest.raises(ValueError, match=r"join boundaries must be positive"):
        join([step_lr(BASE, 3), step_lr(BASE, 3)], [0])
    mixed = join([Schedule([0, 2], [0.0, 1.0], unit="epoch"), step_lr(BASE, 3)], [2])
    with pytest.raises(ValueError, match=r"parts on the \['epoch', 'step'\] axes"):
        mixed.bind(steps_per_epoch=10)
    with pytest.raises(ValueError, match=r"timed in fractions of the fit"):
        join([Schedule([0, 0.5], [0.0, 1.0], unit="fraction"), step_lr(BASE, 3)], [0.5])


def test_scalar_and_table_evaluation_agree_on_composites():
    s = repeat(join([linear_lr(1.0, 0.1, total_iters=3), exponential_lr(1.0, 0.7)], [3]), 3, period=8, period_mult=1.5)
    b = s.bind()
    ts = np.linspace(-2.0, 40.0, 337)
    assert b.table(ts).tolist() == [b(float(t)) for t in ts]


class _Snap(Callback):
    reads = ("global_step",)

    def __init__(self, at):
        self.at, self.state = at, None

    def after_batch(self, learner):
        if learner.phase == "train" and learner.global_step == self.at:
            self.state = copy.deepcopy(learner.state_dict())


def _run(schedule, snap_at=None, resume=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 3, generator=g), torch.randn(4, 1, generator=g)) for _ in range(5)]
    sched, snap = Scheduler({LearningRate: schedule}), _Snap(snap_at)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched, snap]).fit(4, resume_from=resume)
    return model, sched, snap.state


@pytest.mark.parametrize(
    "schedule",
    [
        join([linear_lr(BASE, 0.1, total_iters=5), step_lr(BASE, 3, 0.5)], [5]),
        repeat(exponential_lr(BASE, 0.8), 2, period=5, period_mult=1.5),
        shift(product(linear_lr(BASE, 0.5, total_iters=2), step_lr(1.0, 3, 0.5)), 2),
    ],
    ids=["join", "repeat", "shift of a product"],
)
def test_a_composite_resumes_exactly(schedule):
    # run -> save at step 7 -> restore -> re-run: the same rates and the same weights as the uninterrupted run
    model, sched, state = _run(schedule, snap_at=7)
    model2, sched2, _ = _run(schedule, resume=state)
    assert sched2.history == sched.history
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
