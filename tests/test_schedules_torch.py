"""torch's decay schedulers as presets, and their product, against torch.optim.lr_scheduler itself.

The cases are those of torch's own tests (test/optim/test_lrscheduler.py: test_step_lr, test_multi_step_lr,
test_exp_lr, test_constantlr, test_linearlr, test_get_last_lr_linearlr, test_poly_lr, the test_closed_form_*
cases over 20 epochs, test_chained_lr1..5), plus the smallest and edge arguments. The reference is torch's
scheduler stepping a real SGD optimizer (lr 0.05, as in torch's tests); tolerance 1e-12 relative, since torch
multiplies the previous lr by a ratio each step (its recursive form) where loopkit evaluates a closed form.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.optim import lr_scheduler as L

from loopkit import Learner
from loopkit.schedules import (
    constant_lr,
    exponential_lr,
    linear_lr,
    multistep_lr,
    polynomial_lr,
    product,
    step_lr,
)
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from loopkit.scheduling.scheduler import Scheduler

BASE = 0.05


def torch_lrs(make, n, base=BASE):
    """The lr before each of n optimizer steps, torch's scheduler(s) stepped after each (ChainedScheduler for a
    list)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    made = make(opt)
    scheduler = L.ChainedScheduler(made) if isinstance(made, list) else made
    lrs = []
    for k in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if k < n - 1:
            scheduler.step()
    return lrs


def close(ours, reference):
    ours = list(ours)
    assert len(ours) == len(reference)
    for k, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-300), f"step {k}: {a!r} != {b!r}"


# Each case: (ours, torch's, number of steps); ours and torch's take the base lr.
CASES = {
    "test_step_lr": (lambda b: step_lr(b, 3, gamma=0.1), lambda o: L.StepLR(o, gamma=0.1, step_size=3), 10),
    "test_closed_form_step_lr": (lambda b: step_lr(b, 3, 0.1), lambda o: L.StepLR(o, 3, gamma=0.1), 20),
    "test_multi_step_lr": (
        lambda b: multistep_lr(b, [2, 5, 9], gamma=0.1),
        lambda o: L.MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]),
        12,
    ),
    "test_closed_form_multi_step_lr": (
        lambda b: multistep_lr(b, [2, 5, 9]),
        lambda o: L.MultiStepLR(o, [2, 5, 9]),
        20,
    ),
    "test_exp_lr": (lambda b: exponential_lr(b, gamma=0.9), lambda o: L.ExponentialLR(o, gamma=0.9), 10),
    "test_closed_form_exp_lr": (lambda b: exponential_lr(b, 0.9), lambda o: L.ExponentialLR(o, 0.9), 20),
    "test_constantlr": (
        lambda b: constant_lr(b, factor=1.0 / 2, total_iters=5),
        lambda o: L.ConstantLR(o, factor=1.0 / 2, total_iters=5),
        10,
    ),
    "test_closed_form_constantlr": (
        lambda b: constant_lr(b, factor=1.0 / 3, total_iters=4),
        lambda o: L.ConstantLR(o, factor=1.0 / 3, total_iters=4),
        20,
    ),
    "test_constantlr_is_constant_for_constant_epoch (defaults)": (constant_lr, L.ConstantLR, 10),
    "test_linearlr": (
        lambda b: linear_lr(b, start_factor=1.0 / 2, total_iters=4),
        lambda o: L.LinearLR(o, start_factor=1.0 / 2, total_iters=4),
        10,
    ),
    "test_get_last_lr_linearlr": (
        lambda b: linear_lr(b, start_factor=1.0 / 4, end_factor=3.0 / 5, total_iters=4),
        lambda o: L.LinearLR(o, start_factor=1.0 / 4, end_factor=3.0 / 5, total_iters=4),
        10,
    ),
    "test_closed_form_linearlr": (
        lambda b: linear_lr(b, start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
        lambda o: L.LinearLR(o, start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
        20,
    ),
    "test_linear_linearlr_is_constant_for_constant_epoch (defaults)": (linear_lr, L.LinearLR, 10),
    "test_poly_lr": (
        lambda b: polynomial_lr(b, total_iters=5, power=0.9),
        lambda o: L.PolynomialLR(o, power=0.9, total_iters=5),
        10,
    ),
    "test_closed_form_poly_lr": (lambda b: polynomial_lr(b, power=0.9), lambda o: L.PolynomialLR(o, power=0.9), 20),
    "PolynomialLR defaults": (polynomial_lr, L.PolynomialLR, 8),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decay_presets_match_torchs_schedulers_on_torchs_test_cases(name):
    ours, theirs, n = CASES[name]
    reference = torch_lrs(theirs, n)
    schedule = ours(BASE)
    close(schedule.values(n).tolist(), reference)
    bound = schedule.bind()
    close([bound(k) for k in range(n)], reference)  # the scalar path too


def test_constant_factor_zero_is_refused_because_torch_divides_by_zero_when_it_ends():
    with pytest.raises(ZeroDivisionError):
        torch_lrs(lambda o: L.ConstantLR(o, factor=0.0, total_iters=2), 4)
    with pytest.raises(ValueError, match=r"constant_lr\(factor=0.0\).*anneal='step'"):
        constant_lr(0.1, factor=0.0, total_iters=2)


def test_torchs_hand_written_targets_hold():
    # torch's test_step_lr and test_poly_lr targets, written out as torch's tests write them
    assert step_lr(0.05, 3).values(12).tolist() == pytest.approx(
        [0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3, rel=1e-12
    )
    poly = [(1.0 - x / 5) ** 0.9 * 0.05 for x in range(5)] + [0.0] * 5
    assert polynomial_lr(0.05, 5, 0.9).values(10).tolist() == pytest.approx(poly, rel=1e-12, abs=1e-300)


EDGES = {
    "step_size=1": (lambda b: step_lr(b, 1, 0.5), lambda o: L.StepLR(o, 1, gamma=0.5), 6),
    "gamma=1": (lambda b: step_lr(b, 2, 1.0), lambda o: L.StepLR(o, 2, gamma=1.0), 6),
    "gamma=0": (lambda b: exponential_lr(b, 0.0), lambda o: L.ExponentialLR(o, 0.0), 4),
    "milestone 0": (lambda b: multistep_lr(b, [0, 3]), lambda o: L.MultiStepLR(o, [0, 3]), 6),
    "repeated, unsorted milestones": (
        lambda b: multistep_lr(b, [4, 2, 2], 0.5),
        lambda o: L.MultiStepLR(o, [4, 2, 2], 0.5),
        7,
    ),
    "no milestones": (lambda b: multistep_lr(b, []), lambda o: L.MultiStepLR(o, []), 3),
    "constant total_iters=1": (lambda b: constant_lr(b, 0.5, 1), lambda o: L.ConstantLR(o, 0.5, 1), 4),
    "constant factor=1": (lambda b: constant_lr(b, 1.0, 2), lambda o: L.ConstantLR(o, 1.0, 2), 4),
    "linear total_iters=1": (lambda b: linear_lr(b, 0.5, 1.0, 1), lambda o: L.LinearLR(o, 0.5, 1.0, 1), 4),
    "linear to 0": (lambda b: linear_lr(b, 1.0, 0.0, 3), lambda o: L.LinearLR(o, 1.0, 0.0, 3), 5),
    "polynomial total_iters=1": (lambda b: polynomial_lr(b, 1, 2.0), lambda o: L.PolynomialLR(o, 1, 2.0), 4),
    "polynomial power=0": (lambda b: polynomial_lr(b, 3, 0.0), lambda o: L.PolynomialLR(o, 3, 0.0), 5),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_decay_presets_match_torch_on_edge_arguments(name):
    ours, theirs, n = EDGES[name]
    close(ours(BASE).values(n).tolist(), torch_lrs(theirs, n))


@pytest.mark.parametrize(
    "call, message",
    [
        # torch's two formulas disagree at total_iters=0, and its closed form divides by zero there
        (lambda: linear_lr(0.1, total_iters=0), "linear_lr(total_iters=0)"),
        (lambda: constant_lr(0.1, total_iters=0), "constant_lr(total_iters=0)"),
        (lambda: polynomial_lr(0.1, total_iters=0), "polynomial_lr(total_iters=0)"),
        # torch's own ranges (test_linearlr_start_factor_limits1/2, ConstantLR's factor)
        (lambda: linear_lr(0.1, start_factor=0.0), "linear_lr(start_factor=0.0): start_factor must be > 0"),
        (lambda: linear_lr(0.1, start_factor=1.1), "linear_lr(start_factor=1.1)"),
        (lambda: constant_lr(0.1, factor=1.5), "constant_lr(factor=1.5)"),
        (lambda: constant_lr(0.1, factor=0.0), "constant_lr(factor=0.0): factor must be > 0 and <= 1; torch's"),
        # never-ending growth would leave the float range
        (lambda: step_lr(0.1, 10, gamma=1.5), "step_lr(gamma=1.5): gamma must be >= 0 and <= 1"),
        (lambda: exponential_lr(0.1, 2.0), "exponential_lr(gamma=2.0)"),
        (lambda: step_lr(0.1, 0), "step_lr(step_size=0)"),
        (lambda: step_lr(0.1, 2.5), "step_lr(step_size=2.5): step_size must be a whole number"),
        (lambda: multistep_lr(0.1, [3, -1]), "multistep_lr(milestones[1]=-1)"),
        (lambda: multistep_lr(0.1, [1, 2], gamma=float("inf")), "multistep_lr(gamma=inf)"),
        (lambda: multistep_lr(0.1, list(range(400)), gamma=10.0), "multistep_lr gives knots or values beyond"),
        (lambda: step_lr(float("nan"), 3), "step_lr(base_lr=nan)"),
        (lambda: polynomial_lr(0.1, 5, power=-1), "polynomial_lr(power=-1)"),
        (lambda: step_lr(0.1, 3, unit="fraction"), "step_lr(unit='fraction')"),
        (lambda: product(), "at least one schedule"),
    ],
)
def test_decay_preset_arguments_are_refused_in_the_callers_terms(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# ----------------------------------------------------------------------------------------------- product
CHAINED = {
    "test_chained_lr1": (
        lambda: product(step_lr(BASE, 3, 0.1)),
        lambda o: [L.StepLR(o, gamma=0.1, step_size=3)],
        10,
    ),
    "test_chained_lr2": (
        lambda: product(linear_lr(BASE, start_factor=0.4, total_iters=3)),
        lambda o: [L.LinearLR(o, start_factor=0.4, total_iters=3)],
        10,
    ),
    "test_chained_lr3": (
        lambda: product(linear_lr(BASE, start_factor=0.4, total_iters=3), multistep_lr(1.0, [4, 8, 10], 0.1)),
        lambda o: [L.LinearLR(o, start_factor=0.4, total_iters=3), L.MultiStepLR(o, milestones=[4, 8, 10], gamma=0.1)],
        10,
    ),
    "test_chained_lr4": (
        lambda: product(exponential_lr(BASE, 0.9), constant_lr(1.0, factor=0.2, total_iters=4), step_lr(1.0, 3, 0.1)),
        lambda o: [L.ExponentialLR(o, gamma=0.9), L.ConstantLR(o, factor=0.2, total_iters=4), L.StepLR(o, 3, 0.1)],
        9,
    ),
    "test_chained_lr5": (
        lambda: product(polynomial_lr(BASE, total_iters=5, power=0.9), constant_lr(1.0, factor=0.1)),
        lambda o: [L.PolynomialLR(o, power=0.9, total_iters=5), L.ConstantLR(o, factor=0.1)],
        10,
    ),
}


@pytest.mark.parametrize("name", list(CHAINED))
def test_product_matches_chained_scheduler_on_torchs_test_cases(name):
    ours, theirs, n = CHAINED[name]
    reference = torch_lrs(theirs, n)
    close(ours().values(n).tolist(), reference)
    bound = ours().bind()
    close([bound(k) for k in range(n)], reference)


def test_chained_lr4_hand_written_targets():
    # torch's test_chained_lr4 targets as torch writes them
    targets = (
        [0.05 * 0.2 * 0.9**x for x in range(3)]
        + [0.05 * 0.2 * 0.9**3 * 0.1]
        + [0.05 * 0.9**x * 0.1 for x in range(4, 6)]
        + [0.05 * 0.9**x * 0.01 for x in range(6, 9)]
    )
    ours = product(exponential_lr(0.05, 0.9), constant_lr(1.0, 0.2, 4), step_lr(1.0, 3, 0.1)).values(9)
    assert ours.tolist() == pytest.approx(targets, rel=1e-12)


def test_product_refuses_factors_on_different_axes_and_overflowing_values():
    mixed = product(step_lr(1.0, 3), step_lr(1.0, 3, unit="epoch"))
    with pytest.raises(ValueError, match=r"on the \['epoch', 'step'\] axes; give every factor the same unit"):
        mixed.bind(steps_per_epoch=10, n_epochs=2)
    with pytest.raises(ValueError, match="beyond the float range"):
        product(constant_lr(1e200, 1.0), constant_lr(1e200, 1.0)).bind()
    with pytest.raises(TypeError, match="factor 1 is not a schedule"):
        product(step_lr(1.0, 3), 0.5)


# ----------------------------------------------------------------------------------------------- in a fit
def fit_lrs(schedule, n_epochs, n_batches, per="step"):
    model = torch.nn.Linear(1, 1)
    sched = Scheduler({LearningRate: schedule}, per=per)
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * n_batches
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched]).fit(n_epochs)
    return sched.history["lr"]


def test_endless_torch_decays_run_in_a_fit_of_any_length_without_a_policy_flag():
    close(fit_lrs(step_lr(BASE, 3, 0.1), 2, 5), torch_lrs(lambda o: L.StepLR(o, 3, 0.1), 10))
    chained = product(linear_lr(BASE, 0.4, total_iters=3), exponential_lr(1.0, 0.9))
    close(
        fit_lrs(chained, 3, 4),
        torch_lrs(lambda o: [L.LinearLR(o, start_factor=0.4, total_iters=3), L.ExponentialLR(o, 0.9)], 12),
    )


def test_per_epoch_presets_are_torchs_scheduler_stepped_once_an_epoch():
    # unit="epoch" with Scheduler(per="epoch"): the common torch loop that steps the scheduler after each epoch
    ours = fit_lrs(multistep_lr(BASE, [2, 5], unit="epoch"), 7, 3, per="epoch")
    assert ours == pytest.approx(torch_lrs(lambda o: L.MultiStepLR(o, [2, 5]), 7), rel=1e-12)
    ours = fit_lrs(exponential_lr(BASE, 0.5, unit="epoch"), 4, 3, per="epoch")
    assert ours == pytest.approx([BASE * 0.5**e for e in range(4)], rel=1e-12)
    # with per="step", a step decay in epochs still changes at epoch boundaries
    stairs = fit_lrs(step_lr(BASE, 1, 0.5, unit="epoch"), 3, 2)
    assert stairs == pytest.approx([BASE, BASE, BASE / 2, BASE / 2, BASE / 4, BASE / 4], rel=1e-12)


def test_decay_presets_are_picklable_and_compare_by_value():
    import pickle

    for s in (step_lr(0.1, 3), exponential_lr(0.1, 0.9), polynomial_lr(0.1, 5, 2.0), product(step_lr(0.1, 3))):
        assert pickle.loads(pickle.dumps(s)) == s
    assert step_lr(0.1, 3) != step_lr(0.1, 4)
    assert repr(step_lr(0.1, 3)) == "step_lr(0.1, step_size=3, gamma=0.1, unit='step')"
    assert math.isinf(step_lr(0.1, 3).bind().horizon)
