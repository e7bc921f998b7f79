"""transformers' schedule tests (tests/optimization/test_optimization.py, ScheduleInitTest.test_schedulers), ported.

transformers drives AdamW at lr 10 for 10 steps and lists the rates rounded to 2-4 digits (compared there with
tol=1e-2). Here each schedule is compared twice: with transformers' listed numbers at their printed precision
(one unit of the last printed digit: they are cut, 8.5355 listed as 8.53), and with transformers' lr_lambda formula, written out in the test, at
1e-9 relative. Its get_wsd_schedule, not in that test, is checked against its formula the same way.
"""

from __future__ import annotations

import math

import pytest

from loopkit.schedules import (
    Schedule,
    cosine_restarts,
    inverse_sqrt,
    warmup_cosine,
    warmup_linear,
    warmup_polynomial,
    warmup_stable_decay,
)

LR = 10.0
REL = 1e-9


def printed(ours, listed):
    """Equal to transformers' listed numbers to the digits it prints, which are cut, not rounded (8.53 stands
    for 8.5355): within one unit of the last printed digit."""
    for k, (a, b) in enumerate(zip(ours, listed)):
        digits = len(repr(b).split(".")[1]) if "." in repr(b) else 0
        assert abs(a - b) < 10.0**-digits, f"step {k}: {a!r} vs listed {b!r}"


def close(ours, formula):
    assert len(ours) == len(formula)
    for k, (a, b) in enumerate(zip(ours, formula)):
        assert a == pytest.approx(b, rel=REL, abs=1e-300), f"step {k}: {a!r} vs {b!r}"


def warm(step, n_warm):  # transformers' warmup factor
    return step / max(1, n_warm)


def linear_lambda(step, n_warm=2, n_total=10):
    if step < n_warm:
        return warm(step, n_warm)
    return max(0.0, (n_total - step) / max(1, n_total - n_warm))


def cosine_lambda(step, n_warm=2, n_total=10, cycles=0.5):
    if step < n_warm:
        return warm(step, n_warm)
    progress = (step - n_warm) / max(1, n_total - n_warm)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def hard_restarts_lambda(step, n_warm=2, n_total=10, cycles=2):
    if step < n_warm:
        return warm(step, n_warm)
    progress = (step - n_warm) / max(1, n_total - n_warm)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def polynomial_lambda(step, n_warm=2, n_total=10, lr_end=1e-7, power=2.0):
    if step < n_warm:
        return warm(step, n_warm)
    if step > n_total:
        return lr_end / LR
    remaining = 1 - (step - n_warm) / (n_total - n_warm)
    return ((LR - lr_end) * remaining**power + lr_end) / LR


def inverse_sqrt_lambda(step, n_warm=2, timescale=None):
    timescale = timescale or n_warm or 10_000
    if step < n_warm:
        return warm(step, n_warm)
    return 1.0 / math.sqrt((step + timescale - n_warm) / timescale)


CASES = {
    # name: (loopkit schedule, transformers' listed rates, transformers' lambda)
    "get_constant_schedule": (Schedule([0], [LR], unit="step"), [10.0] * 10, lambda t: 1.0),
    "get_constant_schedule_with_warmup(4)": (
        Schedule([0, 4], [0.0, LR], unit="step"),
        [0.0, 2.5, 5.0, 7.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        lambda t: warm(t, 4) if t < 4 else 1.0,
    ),
    "get_linear_schedule_with_warmup": (
        warmup_linear(2, 10, LR),
        [0.0, 5.0, 10.0, 8.75, 7.5, 6.25, 5.0, 3.75, 2.5, 1.25],
        linear_lambda,
    ),
    "get_cosine_schedule_with_warmup": (
        warmup_cosine(2, 10, LR),
        [0.0, 5.0, 10.0, 9.61, 8.53, 6.91, 5.0, 3.08, 1.46, 0.38],
        cosine_lambda,
    ),
    "get_cosine_with_hard_restarts_schedule_with_warmup(num_cycles=2)": (
        cosine_restarts(4, LR, cycles=2, warmup=2),
        [0.0, 5.0, 10.0, 8.53, 5.0, 1.46, 10.0, 8.53, 5.0, 1.46],
        hard_restarts_lambda,
    ),
    "get_polynomial_decay_schedule_with_warmup(power=2, lr_end=1e-7)": (
        warmup_polynomial(2, 10, LR, end=1e-7, power=2.0),
        [0.0, 5.0, 10.0, 7.656, 5.625, 3.906, 2.5, 1.406, 0.625, 0.156],
        polynomial_lambda,
    ),
    "get_inverse_sqrt_schedule(num_warmup_steps=2)": (
        inverse_sqrt(LR, 2),
        [0.0, 5.0, 10.0, 8.165, 7.071, 6.325, 5.774, 5.345, 5.0, 4.714],
        inverse_sqrt_lambda,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transformers_schedule(name):
    schedule, listed, lr_lambda = CASES[name]
    ours = schedule.values(10).tolist()
    printed(ours, listed)
    close(ours, [LR * lr_lambda(t) for t in range(10)])


# the cosine is deliberately different past num_training_steps: see the next test
@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "get_cosine_schedule_with_warmup"))
def test_transformers_schedule_beyond_its_listed_steps(name):
    schedule, _, lr_lambda = CASES[name]
    close(schedule.values(40).tolist(), [LR * lr_lambda(t) for t in range(40)])


def test_cosine_holds_its_floor_where_transformers_climbs_again():
    # deliberately different: past num_training_steps transformers' cosine factor 0.5 * (1 + cos(pi * progress))
    # rises again (progress > 1); loopkit's schedule ends at its floor and holds it
    ours = warmup_cosine(2, 10, LR).values(16).tolist()
    theirs = [LR * cosine_lambda(t) for t in range(16)]
    close(ours[:11], theirs[:11])
    assert ours[11:] == [0.0] * 5
    assert all(v > 0 for v in theirs[11:])


@pytest.mark.parametrize("warmup_type", ["linear", "cos", "1-sqrt"])
@pytest.mark.parametrize("decay_type", ["linear", "cos", "1-sqrt"])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_warmup_stable_decay_matches_transformers_formula(warmup_type, decay_type, min_lr_ratio):
    n_warm, n_stable, n_decay = 4, 5, 6

    def wsd_lambda(step):  # transformers' _get_wsd_scheduler_lambda, num_cycles=0.5
        if step < n_warm:
            p = step / max(1, n_warm)
            f = {"linear": p, "cos": 0.5 * (1.0 - math.cos(math.pi * p)), "1-sqrt": 1.0 - math.sqrt(1.0 - p)}
            return max(0.0, f[warmup_type] * (1.0 - min_lr_ratio) + min_lr_ratio)
        if step < n_warm + n_stable:
            return 1.0
        if step < n_warm + n_stable + n_decay:
            p = (step - n_warm - n_stable) / max(1, n_decay)
            f = {"linear": 1.0 - p, "cos": 0.5 * (1.0 + math.cos(math.pi * p)), "1-sqrt": 1.0 - math.sqrt(p)}
            return max(0.0, f[decay_type] * (1.0 - min_lr_ratio) + min_lr_ratio)
        return min_lr_ratio

    floor = LR * min_lr_ratio
    s = warmup_stable_decay(
        n_warm, n_stable, n_decay, LR, floor=floor, warmup_start=floor, warmup=warmup_type, decay=decay_type
    )
    ours = s.values(20).tolist()
    expected = [LR * wsd_lambda(t) for t in range(20)]
    for k, (a, b) in enumerate(zip(ours, expected)):
        # 1e-9 of the peak: a 1-sqrt warmup near its end subtracts nearly equal numbers in both formulas
        assert a == pytest.approx(b, rel=REL, abs=REL * LR), f"step {k}: {a!r} vs {b!r}"


@pytest.mark.parametrize("phases", [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 4), (5, 0, 0)])
def test_warmup_stable_decay_with_empty_phases_matches_transformers(phases):
    n_warm, n_stable, n_decay = phases

    def wsd_lambda(step):  # linear warmup and decay, min_lr_ratio 0.2
        if step < n_warm:
            return step / max(1, n_warm) * 0.8 + 0.2
        if step < n_warm + n_stable:
            return 1.0
        if step < n_warm + n_stable + n_decay:
            return (1.0 - (step - n_warm - n_stable) / max(1, n_decay)) * 0.8 + 0.2
        return 0.2

    s = warmup_stable_decay(*phases, LR, floor=2.0, warmup_start=2.0, decay="linear")
    close(s.values(12).tolist(), [LR * wsd_lambda(t) for t in range(12)])


def test_inverse_sqrt_has_no_horizon():
    bound = inverse_sqrt(LR, 2).bind()
    assert bound.horizon == math.inf and bound.open_from == 2.0  # any fit ending after the warmup suits it
    close([bound(1e6)], [LR * inverse_sqrt_lambda(10**6)])
    close(inverse_sqrt(LR).values(5).tolist(), [LR * inverse_sqrt_lambda(t, 0) for t in range(5)])  # timescale 1e4
