"""optax's schedule tests (optax/schedules/_schedule_test.py and _join_test.py), ported case by case.

Each case states optax's call, expresses it with loopkit's public API, and compares loopkit's values with optax's
expected numbers. optax writes most of them as formulas (``10 + 15 * (1 - n / 10) ** 2``), evaluated here in
float64 and compared at 1e-9 relative. Where optax pastes float32 outputs (``0.09516553580760956``) they are
compared at optax's own rtol=1e-6 (float32 carries 7 digits) and the formula behind them at 1e-9.

Where loopkit deliberately differs (a refusal where optax quietly returns a constant), the test pins loopkit's
behaviour and says why; docs/schedules.md lists them. Counts are in docs/schedules.md ("The peers' test suites").
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopkit.schedules import (
    Schedule,
    cosine,
    exponential_lr,
    join,
    linear_onecycle,
    shift,
    step_lr,
    warmup_cosine,
    warmup_polynomial,
)

REL = 1e-9


def values(schedule, n):
    return schedule.values(n).tolist()


def assert_close(ours, expected, rel=REL):
    assert len(ours) == len(expected)
    for k, (a, b) in enumerate(zip(ours, expected)):
        assert a == pytest.approx(b, rel=rel, abs=1e-300), f"step {k}: loopkit {a!r}, optax {b!r}"


# ------------------------------------------------------------------------------------------- constant, join
def test_constant_schedule():  # constant_schedule(10), 15 steps
    assert values(Schedule([0], [10.0], unit="step"), 15) == [10.0] * 15


def test_join_schedules_of_constants():  # join_schedules([constant 1, constant 2, constant 1], [3, 6])
    parts = [Schedule([0], [v], unit="step") for v in (1.0, 2.0, 1.0)]
    assert values(join(parts, [3, 6]), 7) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0]


# ------------------------------------------------------------------------------------------------ polynomial
def test_polynomial_linear():  # polynomial_schedule(init_value=10, end_value=20, power=1, transition_steps=10)
    ours = values(warmup_polynomial(0, 10, 10.0, end=20.0, power=1), 15)
    assert_close(ours, [float(v) for v in range(10, 20)] + [20.0] * 5)


def test_polynomial_nonlinear():  # polynomial_schedule(25, 10, power=2, transition_steps=10)
    ours = values(warmup_polynomial(0, 10, 25.0, end=10.0, power=2), 15)
    assert_close(ours, [10.0 + 15.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10.0] * 5)


def test_polynomial_with_decay_begin():  # polynomial_schedule(30, 10, power=2, transition_steps=10, transition_begin=4)
    ours = values(shift(warmup_polynomial(0, 10, 30.0, end=10.0, power=2), 4), 20)
    assert_close(ours, [30.0] * 4 + [10.0 + 20.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10.0] * 6)


@pytest.mark.parametrize("transition_steps", [-1, 0])
def test_polynomial_with_no_steps_is_refused_where_optax_returns_the_initial_value(transition_steps):
    # deliberately different: optax logs and returns init_value forever; a decay of no length is a mistake
    with pytest.raises(ValueError, match=rf"num_training_steps={transition_steps}"):
        warmup_polynomial(0, transition_steps, 10.0, end=20.0)


# ------------------------------------------------------------------------------------------ piecewise constant
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_piecewise_constant(sign):  # piecewise_constant_schedule(+-0.1, {3: 2., 6: 0.5})
    s = Schedule([0, 3, 6], [sign * 0.1, sign * 0.1 * 2.0, sign * 0.1 * 2.0 * 0.5], anneal="step", unit="step")
    assert_close(values(s, 10), [sign * v for v in [0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1]])


# ----------------------------------------------------------------------------------------------- exponential
def optax_exponential(staircase, rate, every, begin=0, end_value=None):
    """optax's exponential_decay: step_lr for staircase, exponential_lr otherwise; transition_begin is a shift."""
    if staircase:
        s = step_lr(1.0, every, rate, end_value=end_value)
    else:
        s = exponential_lr(1.0, rate, every=every, end_value=end_value)
    return shift(s, begin) if begin else s


def expected_exponential(staircase, rate, every, begin, n):
    p = [math.floor(c / every) if staircase else c / every for c in range(n)]
    return [1.0] * begin + [rate**q for q in p]


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_with_rate_one_is_constant(staircase):  # exponential_decay(1., 15, decay_rate=1.)
    assert values(optax_exponential(staircase, 1.0, 15), 15) == [1.0] * 15


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("transition_steps", [-1, 0])
def test_exponential_with_no_transition_steps_is_refused(staircase, transition_steps):
    # deliberately different: optax returns init_value forever
    with pytest.raises(ValueError, match=rf"(step_size|every)={transition_steps}"):
        optax_exponential(staircase, 1.0, transition_steps)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_with_rate_zero_follows_torch_not_optax(staircase):
    # deliberately different: optax returns init_value forever for decay_rate=0; loopkit follows torch's
    # ExponentialLR/StepLR, where gamma 0 is a decay to 0 after the first period
    ours = values(optax_exponential(staircase, 0.0, 2), 5)
    assert ours == ([1.0, 1.0, 0.0, 0.0, 0.0] if staircase else [1.0, 0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("staircase, begin", [(False, 0), (True, 0), (False, 5), (True, 5)])
def test_exponential_growth(staircase, begin):  # exponential_decay(1., 2, decay_rate=2., transition_begin=begin)
    # a growth needs a ceiling in loopkit; one it never reaches in these 15 steps (2 ** 7.5 < 2 ** 8)
    s = optax_exponential(staircase, 2.0, 2, begin, end_value=2.0**8)
    assert_close(values(s, 15 + begin), expected_exponential(staircase, 2.0, 2, begin, 15))


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("rate, end_value", [(0.2, 0.1), (2.0, 3.0)])
def test_exponential_with_end_value(rate, end_value, staircase):  # transition_steps=2, transition_begin=3
    expected = np.array(expected_exponential(staircase, rate, 2, 3, 11))
    expected = np.maximum(expected, end_value) if rate < 1 else np.minimum(expected, end_value)
    ours = values(optax_exponential(staircase, rate, 2, 3, end_value=end_value), 14)
    assert_close(ours, expected.tolist())


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_end_value_on_the_wrong_side_is_refused(staircase):
    # deliberately different: optax's (decay_rate=1.0, end_value=0.1) clips with min and holds 0.1 from step 0
    with pytest.raises(ValueError, match=r"end_value=0.1\): end_value would be a never reached"):
        optax_exponential(staircase, 1.0, 2, end_value=0.1)


def test_exponential_halving():  # exponential_decay(32., transition_steps=1, decay_rate=0.5)
    assert values(exponential_lr(32.0, 0.5), 5) == [32.0, 16.0, 8.0, 4.0, 2.0]


# ---------------------------------------------------------------------------------------------------- cosine
def cosine_multipliers(positions):
    return [0.5 + 0.5 * math.cos(math.pi * p) for p in positions]


def test_cosine_decay_over_the_whole_run():  # cosine_decay_schedule(0.1, 10, alpha=0)
    ours = values(warmup_cosine(0, 10, 0.1), 10)
    assert_close(ours, [0.1 * m for m in cosine_multipliers([k / 10 for k in range(10)])])


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_decay_shorter_than_the_run(alpha):  # cosine_decay_schedule(0.1, 5, alpha)
    ours = values(warmup_cosine(0, 5, 0.1, floor=0.1 * alpha), 12)
    positions = [0.0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 7
    expected = [0.1 * ((1 - alpha) * m + alpha) for m in cosine_multipliers(positions)]
    assert_close(ours, expected)


def test_cosine_decay_with_exponent():  # cosine_decay_schedule(0.1, 100, alpha=0, exponent=2)
    bound = Schedule([0, 100], [0.1, 0.0], anneal=cosine(2), unit="step").bind()
    ours = bound.table(np.array([0, 10, 50, 75, 100])).tolist()
    float32_outputs = [0.1, 0.09516553580760956, 0.025, 0.0021446612663567066, 0.0]
    assert_close(ours, float32_outputs, rel=1e-6)
    assert_close(ours, [0.1 * m**2 for m in cosine_multipliers([0, 0.1, 0.5, 0.75, 1.0])])


def test_cosine_decay_with_giant_steps():  # cosine_decay_schedule(1000., decay_steps=int(1e10)) at 1e9
    ours = warmup_cosine(0, 10**10, 1000.0).bind()(1e9)
    assert ours == pytest.approx(975.52826, rel=1e-7)  # optax's float32 output, 8 digits
    assert ours == pytest.approx(1000.0 * (0.5 + 0.5 * math.cos(math.pi * 0.1)), rel=REL)


# ------------------------------------------------------------------------------------------- warmup + cosine
@pytest.mark.parametrize("init, peak, end", [(10.0, 0.5, 1e-4), (5.0, 3.0, 0.0)])
def test_warmup_cosine_limits(init, peak, end):  # warmup_cosine_decay_schedule(init, peak, 100, 1000, end)
    b = warmup_cosine(100, 1000, peak, floor=end, warmup_start=init).bind()
    assert (b(0), b(100), b(1000)) == (init, peak, end)


def test_warmup_cosine_with_exponent():  # (0.2, 1.21, end_value=-3.0, warmup 50, decay_steps 100, exponent=2)
    b = warmup_cosine(50, 100, 1.21, floor=-3.0, warmup_start=0.2, exponent=2).bind()
    ours = b.table(np.array([0, 10, 50, 75, 100])).tolist()
    float32_outputs = [
        0.20000004768371582,
        0.4020000100135803,
        1.2100000381469727,
        -1.947500228881836,
        -3.000000238418579,
    ]
    assert_close(ours, float32_outputs, rel=1e-6)
    formula = [0.2, 0.2 + (1.21 - 0.2) * 10 / 50, 1.21, -3.0 + (1.21 + 3.0) * 0.25, -3.0]  # ((1 + cos(pi/2)) / 2)**2
    assert_close(ours, formula)


def test_warmup_cosine_with_zero_peak_keeps_its_end_value():
    # deliberately different: optax sets alpha = 0 when peak_value is 0 and so never reaches end_value (-3): its
    # outputs are [0.2, 0.16, 0, 0, 0]; loopkit decays from 0 to the end value it was given
    b = warmup_cosine(50, 100, 0.0, floor=-3.0, warmup_start=0.2, exponent=2).bind()
    ours = b.table(np.array([0, 10, 50, 75, 100])).tolist()
    assert_close(ours[:3], [0.2, 0.16, 0.0])
    assert_close(ours[3:], [-3.0 + 3.0 * 0.25, -3.0])


@pytest.mark.parametrize("lrs", [(1.6, 0.8, 0.4), (1.6, 1.6, 1.6)])
def test_sgdr_limits(lrs):  # sgdr_schedule of warmup_cosine_decay pieces (warmup 500; 2000, 3000, 5000 steps)
    pieces = [warmup_cosine(500, n, lr) for n, lr in zip((2000, 3000, 5000), lrs)]
    b = join(pieces, [2000, 5000]).bind()
    assert (b(500), b(2500), b(5500)) == lrs


# -------------------------------------------------------------------------------------- piecewise interpolate
def test_linear_piecewise():  # piecewise_interpolate_schedule('linear', 200., {5: 1.5, 10: 0.25})
    s = Schedule([0, 5, 10], [200.0, 200.0 * 1.5, 200.0 * 1.5 * 0.25], anneal="linear", unit="step")
    expected = [200.0, 220.0, 240.0, 260.0, 280.0, 300.0, 255.0, 210.0, 165.0, 120.0, 75.0, 75.0, 75.0]
    assert_close(values(s, 13), expected)


def test_cosine_piecewise():  # piecewise_interpolate_schedule('cosine', 400., {5: 1.2, 3: 0.6, 7: 1.})
    s = Schedule([0, 3, 5, 7], [400.0, 240.0, 288.0, 288.0], anneal="cos", unit="step")
    assert_close(values(s, 9), [400.0, 360.0, 280.0, 240.0, 264.0, 288.0, 288.0, 288.0, 288.0])


@pytest.mark.parametrize("value", [13.0, 17.0])
def test_piecewise_with_no_boundaries(value):  # piecewise_interpolate_schedule(kind, value, {} or None)
    assert values(Schedule([0], [value], unit="step"), 5) == [value] * 5


def test_unknown_interpolation_is_refused():  # 'linar', '' and None
    for bad in ("linar", ""):
        with pytest.raises(ValueError, match=rf"unknown annealing {bad!r}"):
            Schedule([0, 5], [13.0, 39.0], anneal=bad)
    with pytest.raises(TypeError, match="anneal must be a name or a function"):
        Schedule([0, 5], [13.0, 39.0], anneal=None)


# -------------------------------------------------------------------------------------------------- one-cycle
def test_linear_onecycle():  # linear_onecycle_schedule(10, 1000, pct_start=0.3, pct_final=0.7, 10., 100.)
    s = linear_onecycle(10, 1000.0, pct_start=0.3, pct_final=0.7, div_factor=10.0, final_div_factor=100.0)
    expected = [100.0, 400.0, 700.0, 1000.0, 775.0, 550.0, 325.0, 100.0, 67.0, 34.0, 1.0, 1.0]
    assert_close(values(s, 12), expected)


def test_cosine_onecycle():  # cosine_onecycle_schedule(5, 1000., pct_start=0.4, div_factor=10., final_div_factor=100.)
    init = 1000.0 / 10.0  # optax multiplies the scales in turn: init, init * 10, then / (10 * 100)
    s = Schedule([0, 2, 5], [init, init * 10.0, init * 10.0 * (1.0 / (10.0 * 100.0))], anneal="cos", unit="step")
    assert_close(values(s, 7), [100.0, 550.0, 1000.0, 750.25, 250.75, 1.0, 1.0])


def test_onecycle_with_no_steps_is_refused():  # optax raises for transition_steps=0 too
    with pytest.raises(ValueError, match=r"linear_onecycle\(transition_steps=0\)"):
        linear_onecycle(0, 5.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        Schedule([0, 0, 0], [0.2, 5.0, 0.0002], anneal="cos", unit="step")
