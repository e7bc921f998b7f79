"""timm's scheduler tests (tests/test_scheduler.py), ported: the numeric cases of its Cosine, Step, MultiStep,
Poly and Tanh schedulers.

timm's own asserts are mostly spot values at rel 1e-5 (``lr(t_initial) == lr_min``) or shapes (``warmup
increases``). Each is kept, and strengthened: every step is compared with timm's formula (its ``_get_lr``,
written out here in our words) at 1e-9 relative. timm counts time ``t`` from 0 like loopkit.
"""

from __future__ import annotations

import bisect
import itertools
import math

import pytest

from loopkit.schedules import (
    Schedule,
    cosine_restarts,
    join,
    multistep_lr,
    power,
    step_lr,
)

REL = 1e-9
BASE, WARM_INIT, WARM = 0.1, 0.001, 5


def close(ours, expected):
    assert len(ours) == len(expected)
    for k, (a, b) in enumerate(zip(ours, expected)):
        assert a == pytest.approx(b, rel=REL, abs=1e-300), f"t={k}: {a!r} vs timm {b!r}"


# ------------------------------------------------------------------------------------ timm's formulas
def timm_warmup(t, warmup_t, warmup_lr_init, base):
    return warmup_lr_init + t * (base - warmup_lr_init) / warmup_t


def timm_cosine(
    t,
    *,
    t_initial,
    lr_min=0.0,
    cycle_limit=1,
    k_decay=1.0,
    warmup_t=0,
    warmup_lr_init=0.0,
    warmup_prefix=False,
    base=BASE,
):
    if t < warmup_t:
        return timm_warmup(t, warmup_t, warmup_lr_init, base)
    if warmup_prefix:
        t -= warmup_t
    i = t // t_initial
    t_curr = t - t_initial * i
    if i >= cycle_limit:
        return lr_min
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t_curr**k_decay / t_initial**k_decay))


def timm_poly(
    t, *, t_initial, power=0.5, lr_min=0.0, k_decay=1.0, warmup_t=0, warmup_lr_init=0.0, warmup_prefix=False, base=BASE
):
    if t < warmup_t:
        return timm_warmup(t, warmup_t, warmup_lr_init, base)
    if warmup_prefix:
        t -= warmup_t
    if t >= t_initial:
        return lr_min
    return lr_min + (base - lr_min) * (1 - t**k_decay / t_initial**k_decay) ** power


def timm_tanh(
    t, *, t_initial, lr_min=0.0, lb=-7.0, ub=3.0, warmup_t=0, warmup_lr_init=0.0, warmup_prefix=False, base=BASE
):
    if t < warmup_t:
        return timm_warmup(t, warmup_t, warmup_lr_init, base)
    if warmup_prefix:
        t -= warmup_t
    if t >= t_initial:
        return lr_min
    tr = t / t_initial
    return lr_min + 0.5 * (base - lr_min) * (1 - math.tanh(lb * (1.0 - tr) + ub * tr))


def timm_step(t, *, decay_t, decay_rate=1.0, warmup_t=0, warmup_lr_init=0.0, warmup_prefix=False, base=BASE):
    if t < warmup_t:
        return timm_warmup(t, warmup_t, warmup_lr_init, base)
    if warmup_prefix:
        t -= warmup_t
    return base * decay_rate ** (t // decay_t)


def timm_multistep(t, *, decay_t, decay_rate=1.0, warmup_t=0, warmup_lr_init=0.0, warmup_prefix=False, base=BASE):
    if t < warmup_t:
        return timm_warmup(t, warmup_t, warmup_lr_init, base)
    if warmup_prefix:
        t -= warmup_t
    return base * decay_rate ** bisect.bisect_right(decay_t, t)


# --------------------------------------------------------------------- the same schedules in loopkit
def timm_tanh_schedule(base, lr_min, t_initial, lb=-7.0, ub=3.0):
    """timm's tanh curve in loopkit. It does not pass through base and lr_min (at t=0 it is base less 8e-7 of the
    range), and drops to lr_min at t_initial: so knots at its own end values, an annealing f(p) on [0, 1]
    normalised between them, then lr_min joined at t_initial."""

    def h(p):
        return 0.5 * (1.0 - math.tanh(lb * (1.0 - p) + ub * p))

    h0, h1 = h(0.0), h(1.0)

    def f(p):
        return (h(p) - h0) / (h1 - h0)

    v0, v1 = lr_min + (base - lr_min) * h0, lr_min + (base - lr_min) * h1
    curve = Schedule([0, t_initial], [v0, v1], anneal=f, unit="step")
    return join([curve, Schedule([0], [lr_min], unit="step")], [t_initial])


def ramp():
    return Schedule([0, WARM], [WARM_INIT, BASE], unit="step")


def with_warmup(main, prefix):
    """timm's warmup: before the main curve (prefix) or laid over its first steps (timm's default)."""
    if prefix:
        return join([ramp(), main], [WARM])
    return join([ramp(), main_shifted(main)], [WARM])


def main_shifted(main):
    from loopkit.schedules import shift

    return shift(main, -WARM)


MAIN = {
    # timm scheduler: (loopkit schedule without warmup, timm formula with the same kwargs)
    "CosineLRScheduler(t_initial=100)": (
        Schedule([0, 100], [BASE, 0.0], anneal="cos", unit="step"),
        lambda t, **w: timm_cosine(t, t_initial=100, **w),
    ),
    "StepLRScheduler(decay_t=10, decay_rate=0.5)": (
        step_lr(BASE, 10, 0.5),
        lambda t, **w: timm_step(t, decay_t=10, decay_rate=0.5, **w),
    ),
    "MultiStepLRScheduler(decay_t=[10, 20, 30], decay_rate=0.5)": (
        multistep_lr(BASE, [10, 20, 30], 0.5),
        lambda t, **w: timm_multistep(t, decay_t=[10, 20, 30], decay_rate=0.5, **w),
    ),
    "PolyLRScheduler(t_initial=100)": (
        Schedule([0, 100], [BASE, 0.0], anneal=power(0.5), unit="step"),
        lambda t, **w: timm_poly(t, t_initial=100, **w),
    ),
    "TanhLRScheduler(t_initial=100)": (
        timm_tanh_schedule(BASE, 0.0, 100),
        lambda t, **w: timm_tanh(t, t_initial=100, **w),
    ),
}


@pytest.mark.parametrize("name", sorted(MAIN))
def test_warmup_lr_increases(name):  # TestWarmup.test_warmup_lr_increases: warmup_t=5 from 0.001, prefix False
    main, formula = MAIN[name]
    ours = with_warmup(main, prefix=False).values(120).tolist()
    assert ours[0] == WARM_INIT and all(b > a for a, b in itertools.pairwise(ours[:WARM]))
    close(ours, [formula(t, warmup_t=WARM, warmup_lr_init=WARM_INIT) for t in range(120)])


@pytest.mark.parametrize("name", sorted(MAIN))
def test_warmup_prefix_reaches_target_lr(name):  # TestWarmup.test_warmup_prefix_reaches_target_lr
    main, formula = MAIN[name]
    ours = with_warmup(main, prefix=True).values(120).tolist()
    assert ours[WARM] == pytest.approx(BASE, rel=1e-5)  # timm's tolerance: its tanh starts 8e-7 below base
    close(ours, [formula(t, warmup_t=WARM, warmup_lr_init=WARM_INIT, warmup_prefix=True) for t in range(120)])


def test_cosine_decay():  # TestCosineScheduler.test_cosine_decay: t_initial=100, lr_min=0.001
    b = cosine_restarts(100, BASE, cycles=1, floor=0.001).bind()
    assert b(0) == BASE and b(100) == 0.001
    assert b(50) == pytest.approx(0.001 + 0.5 * (BASE - 0.001) * (1 + math.cos(math.pi * 0.5)), rel=REL)
    close([b(t) for t in range(130)], [timm_cosine(t, t_initial=100, lr_min=0.001) for t in range(130)])


def test_cosine_cycles():  # TestCosineScheduler.test_cosine_cycles: t_initial=50, lr_min=0.001, cycle_limit=2
    b = cosine_restarts(50, BASE, cycles=2, floor=0.001).bind()
    assert b(49) < BASE * 0.5
    assert [b(t) for t in range(100, 110)] == [0.001] * 10
    close([b(t) for t in range(120)], [timm_cosine(t, t_initial=50, lr_min=0.001, cycle_limit=2) for t in range(120)])


def test_cycle_length_with_warmup_prefix():  # TestCosineScheduler.test_get_cycle_length: 100, or 110 with warmup
    assert cosine_restarts(100, BASE, cycles=1).bind().horizon == 100
    assert cosine_restarts(100, BASE, cycles=1, warmup=10).bind().horizon == 110


@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("k_decay", [1.0, 2.0, 0.5])
def test_cosine_restarts_with_warmup_and_k_decay_is_timms_cosine(prefix, k_decay):
    s = cosine_restarts(
        30, BASE, cycles=3, floor=1e-3, warmup=WARM, warmup_start=WARM_INIT, warmup_prefix=prefix, k_decay=k_decay
    )
    expected = [
        timm_cosine(
            t,
            t_initial=30,
            lr_min=1e-3,
            cycle_limit=3,
            k_decay=k_decay,
            warmup_t=WARM,
            warmup_lr_init=WARM_INIT,
            warmup_prefix=prefix,
        )
        for t in range(110)
    ]
    close(s.values(110).tolist(), expected)


def test_step_decay():  # TestStepScheduler.test_step_decay: decay_t=10, decay_rate=0.5
    b = step_lr(BASE, 10, 0.5).bind()
    assert (b(9), b(10), b(20)) == (BASE, BASE * 0.5, BASE * 0.5**2)


def test_multistep_decay_boundary():  # the milestone epoch itself is the first decayed one
    b = multistep_lr(BASE, [10, 20], 0.5).bind()
    assert (b(9), b(10), b(19), b(20)) == (BASE, BASE * 0.5, BASE * 0.5, BASE * 0.5**2)


def test_multistep_decay():  # decay_t=[10, 20, 30], decay_rate=0.5, at 8, 11, 21, 31
    b = multistep_lr(BASE, [10, 20, 30], 0.5).bind()
    assert [b(t) for t in (8, 11, 21, 31)] == pytest.approx([BASE * 0.5**k for k in range(4)], rel=REL)


def test_poly_decay():  # TestPolyScheduler.test_poly_decay: t_initial=100, lr_min=0.001, power=1
    s = Schedule([0, 100], [BASE, 0.001], anneal=power(1.0), unit="step")
    b = s.bind()
    assert (b(0), b(100)) == (BASE, 0.001)
    close([b(t) for t in range(120)], [timm_poly(t, t_initial=100, lr_min=0.001, power=1.0) for t in range(120)])


def test_tanh_decay():  # TestTanhScheduler.test_tanh_decay: lr falls over t_initial=100 to near lr_min=0.001
    lrs = timm_tanh_schedule(BASE, 0.001, 100).values(120).tolist()
    assert lrs[-1] < lrs[0]
    close(lrs, [timm_tanh(t, t_initial=100, lr_min=0.001) for t in range(120)])


@pytest.mark.parametrize("kind", ["cosine", "poly"])
def test_k_decay_changes_the_curve(kind):  # TestKDecay: k_decay=2 differs from 1 at t=50, and is timm's
    if kind == "cosine":
        k1 = cosine_restarts(100, BASE, cycles=1).values(100).tolist()
        k2 = cosine_restarts(100, BASE, cycles=1, k_decay=2.0).values(100).tolist()
        expected = [timm_cosine(t, t_initial=100, k_decay=2.0) for t in range(100)]
    else:
        k1 = Schedule([0, 100], [BASE, 0.0], anneal=power(0.5), unit="step").values(100).tolist()
        k2 = Schedule([0, 100], [BASE, 0.0], anneal=power(0.5, k=2.0), unit="step").values(100).tolist()
        expected = [timm_poly(t, t_initial=100, k_decay=2.0) for t in range(100)]
    assert k1[50] != k2[50]
    close(k2, expected)
