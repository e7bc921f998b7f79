"""Schedules refuse what they cannot compute, and always compute what they accept (issue 11, section 4b).

Rule: every public schedule function validates every argument (finite, in range, bounded work), accepts
every real number type alike (Python, numpy scalars, 0-d tensors), and a schedule it accepts evaluates to
finite values at every finite time; evaluating at NaN, an infinity or a non-number raises. The named cases
come first, then the other instances found, then a hypothesis test over every public function.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from loopkit.schedules import (
    BoundSchedule,
    Schedule,
    Time,
    constant_lr,
    cosine,
    cosine_restarts,
    epoch_position,
    epochs,
    exponential_lr,
    fraction,
    inverse_sqrt,
    join,
    linear_lr,
    linear_onecycle,
    multistep_lr,
    onecycle,
    onecycle_momentum,
    onecycle_torch,
    onecycle_torch_momentum,
    polynomial_lr,
    power,
    product,
    repeat,
    scale,
    shift,
    step_lr,
    steps,
    stretch,
    warmup_cosine,
    warmup_linear,
    warmup_polynomial,
    warmup_stable_decay,
)
from loopkit.schedules.anneal import linear

NAN, INF = float("nan"), float("inf")
CYCLE = Schedule([0, 10], [1.0, 0.1], anneal="cos", unit="step")


def refused(call, message, error=ValueError):
    with pytest.raises(error, match=re.escape(message)):
        call()


# ----------------------------------------------------------------------------------------------- the named cases
def test_nan_decay_in_cosine_restarts_is_refused():
    refused(lambda: cosine_restarts(10, 0.1, cycles=3, decay=NAN), "cosine_restarts(decay=nan): decay must be a finite")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_composition_helpers_refuse_nan_and_infinite_arguments(bad):
    refused(lambda: scale(CYCLE, bad), f"scale(factor={bad!r})")
    refused(lambda: shift(CYCLE, bad), f"shift(dt={bad!r})")
    refused(lambda: stretch(CYCLE, bad), f"stretch(factor={bad!r})")
    refused(lambda: repeat(CYCLE, 2, period_mult=bad), f"repeat(period_mult={bad!r})")
    refused(lambda: repeat(CYCLE, 2, decay=bad), f"repeat(decay={bad!r})")
    refused(lambda: join([CYCLE, CYCLE], [bad]), f"join(boundaries[0]={bad!r})")


def test_astronomical_counts_are_refused_at_once():
    refused(
        lambda: repeat(CYCLE, 10**400),
        "repeat(cycles=an integer of 401 digits): cycles must be a whole number between 1 and 50,000",
    )
    refused(lambda: cosine_restarts(10, 0.1, cycles=10**400), "cosine_restarts(cycles=an integer of 401 digits)")
    refused(lambda: steps(10**400), "steps(n=an integer of 401 digits): n is beyond the float range")
    refused(lambda: epochs(-(10**400)), "epochs(x=an integer of 401 digits)")


def test_every_real_number_type_is_accepted_alike():
    ten = [
        10,
        10.0,
        np.int64(10),
        np.int32(10),
        np.float64(10.0),
        np.float32(10.0),
        torch.tensor(10),
        torch.tensor(10.0),
    ]
    for n in ten:
        assert onecycle_torch(n, 1.0) == onecycle_torch(10, 1.0)
        assert onecycle(n, np.float32(0.5)) == onecycle(10, 0.5)
        assert warmup_linear(np.int64(2), n, torch.tensor(0.5)) == warmup_linear(2, 10, 0.5)
        assert cosine_restarts(n, 0.1, cycles=np.int64(2), decay=np.float64(0.5)) == cosine_restarts(
            10, 0.1, cycles=2, decay=0.5
        )
        assert repeat(CYCLE, np.int64(2), period_mult=torch.tensor(2.0)) == repeat(CYCLE, 2, period_mult=2.0)
        assert step_lr(0.1, n) == step_lr(0.1, 10)
        assert steps(n) == steps(10)
    # knots and values as arrays and tensors, and as sequences of numpy and tensor scalars
    expected = Schedule([0, 5], [1.0, 0.0], unit="step")
    assert Schedule(np.array([0, 5]), np.array([1.0, 0.0]), unit="step") == expected
    assert Schedule(torch.tensor([0, 5]), torch.tensor([1.0, 0.0]), unit="step") == expected
    assert Schedule([np.int64(0), torch.tensor(5)], [np.float32(1.0), torch.tensor(0.0)], unit="step") == expected
    assert expected.values(np.int64(3)).tolist() == expected.values(3).tolist() == [1.0, 0.8, 0.6]
    # what is not a real number is still refused: booleans, strings, complex, tensors with more than one value
    for bad in (True, "10", 10 + 0j, torch.tensor([10.0]), torch.tensor(True), None):
        with pytest.raises((TypeError, ValueError)):
            onecycle_torch(bad, 1.0)
    refused(lambda: onecycle_torch(10.5, 1.0), "onecycle_torch(total_steps=10.5): total_steps must be a whole number")


@pytest.mark.parametrize("t", [NAN, INF, -INF, "3", None, [1.0], True])
def test_evaluating_at_a_nan_or_non_numeric_time_raises(t):
    for schedule in (CYCLE, step_lr(0.1, 3), product(CYCLE, step_lr(1.0, 3)), Schedule.smooth([0, 1, 2], [0, 1, 3])):
        bound = schedule.bind(steps_per_epoch=4, n_epochs=3)
        with pytest.raises((TypeError, ValueError), match="evaluate a schedule at"):
            bound(t)
        if not isinstance(t, list):
            with pytest.raises((TypeError, ValueError), match="evaluate a schedule at"):
                bound.table(np.array([0.0, t]) if isinstance(t, float) else [t])
    with pytest.raises(ValueError, match="evaluate a schedule at time nan"):
        CYCLE.values_at(NAN)
    # numpy, tensor and integer times are fine
    bound = CYCLE.bind()
    assert bound(np.float32(5.0)) == bound(torch.tensor(5)) == bound(5) == bound(5.0)
    assert bound.table(torch.arange(3)).tolist() == bound.table(np.arange(3)).tolist()


# ----------------------------------------------------------------------------------------------- other instances
@pytest.mark.parametrize(
    "call, message",
    [
        # a segment whose values are finite but whose difference overflows would evaluate to NaN or inf
        (lambda: Schedule([0, 1], [-1e308, 1e308]), "difference overflows"),
        (lambda: Schedule([0, 1], [1e-300, 1e300], anneal="exp"), "ratio 1e+300 / 1e-300 is outside the float range"),
        # knots whose distance overflows make (t - k0) / (k1 - k0) NaN
        (lambda: Schedule([-1e308, 1e308], [0.0, 1.0]), "too far apart"),
        (lambda: Time(NAN, "step"), "Time(value=nan)"),
        (lambda: Time(1.0, "hours"), "Time(unit='hours')"),
        # compositions whose results leave the float range
        (lambda: scale(Schedule([0, 1], [1.0, 2.0], anneal="exp"), 0.0), "anneal='exp' goes geometrically from 0.0"),
        (
            lambda: scale(Schedule([0, 1], [2.0, -1.0]), 1e308),
            "scale(factor=1e+308) gives knots or values beyond the float range",
        ),
        (lambda: shift(Schedule([0, 1e308], [0, 1]), 1e308), "shift gives knots or values beyond the float range"),
        (lambda: repeat(CYCLE, 2000, period_mult=2.0), "repeat(cycles=2000, period_mult=2.0"),
        (lambda: repeat(CYCLE, 400, decay=100.0), "repeat(cycles=400, period_mult=1.0, decay=100.0)"),
        (
            lambda: repeat(Schedule([0, 1], [1.0, 0.5], anneal="exp", unit="step"), 1200, decay=0.5),
            "repeat: anneal='exp' goes geometrically from 5e-324 to 0.0",
        ),
        (lambda: join([CYCLE], []) and join(CYCLE, []), "join needs a sequence of Schedules"),
        (lambda: join([CYCLE, CYCLE], [NAN]), "join(boundaries[0]=nan)"),
        (lambda: join([], []), "join needs at least one schedule"),
        # preset arguments that used to reach the Schedule unchecked, or not at all
        (lambda: cosine_restarts(10, 0.1, cycles=2, warmup=5, warmup_start=NAN), "cosine_restarts(warmup_start=nan)"),
        (lambda: cosine_restarts(10, 0.1, cycles=2, warmup=-1), "cosine_restarts(warmup=-1)"),
        (lambda: warmup_linear(2, 10, NAN), "warmup_linear(peak=nan)"),
        (lambda: warmup_cosine(2, 10, 1.0, floor=INF), "warmup_cosine(floor=inf)"),
        (lambda: onecycle_torch_momentum(10, base_momentum=NAN), "onecycle_torch_momentum(base_momentum=nan)"),
        (lambda: onecycle_torch(10, 1.0, three_phase=1), "onecycle_torch(three_phase=1)"),
        (lambda: onecycle(0.5, 1.0, pct_start=5e-324), "pct_start * total rounds onto an end"),
        (lambda: onecycle(10, 1e-320, div=1e10), "peak / div underflows to 0"),
        (lambda: onecycle_momentum(10, high=INF), "onecycle_momentum(high=inf)"),
        # geometry and counts
        (lambda: CYCLE.bind(steps_per_epoch=0), "bind(steps_per_epoch=0)"),
        (lambda: CYCLE.bind(n_epochs=0), "bind(n_epochs=0): n_epochs must be > 0"),
        (lambda: CYCLE.bind(n_epochs=NAN), "bind(n_epochs=nan)"),
        (lambda: CYCLE.values(NAN), "values(n_steps=nan)"),
        (lambda: epoch_position(0, 1, 0), "epoch_position(steps_per_epoch=0)"),
        (lambda: epoch_position(NAN, 1, 4), "epoch_position(epoch=nan)"),
        (lambda: BoundSchedule("step", [0.0, NAN], [1.0, 0.0], [linear]), "BoundSchedule(knots[i]=nan)"),
        (lambda: BoundSchedule("step", [1.0, 0.0], [1.0, 0.0], [linear]), "knots must not decrease"),
        (lambda: BoundSchedule("hour", [0.0], [1.0], []), "BoundSchedule(axis='hour')"),
        (lambda: BoundSchedule("step", [0.0, 1.0], [-1e308, 1e308], [linear]), "difference overflows"),
        (lambda: CYCLE.values(5, steps_per_epoch=-1), "values(steps_per_epoch=-1)"),
        (lambda: Schedule([0, 1], [0, 1], unit=["step"]), "unknown unit ['step']"),
        (lambda: Schedule(list(range(100_001)), [0.0] * 100_001), "at most 100,000 knots"),
        (lambda: multistep_lr(0.1, [1] * 100_001), "at most 100,000 milestones"),
    ],
)
def test_other_instances_are_refused_in_the_callers_terms(call, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()


def test_a_fit_of_fractional_epochs_binds_fractions_of_it():
    # fit(max_steps=N) lays schedules over N steps: 2.5 epochs of 4 steps for N = 10
    half = Schedule([0, 0.5, 1], [0.0, 1.0, 0.0], unit="fraction").bind(steps_per_epoch=4, n_epochs=2.5)
    assert half.knots == [0.0, 1.25, 2.5] and half(1.25) == 1.0


def test_a_smooth_curve_too_steep_for_floats_is_refused_when_bound():
    steep = Schedule.smooth([0, 1e-300, 1], [0.0, 1e300, 1e300])
    with pytest.raises(ValueError, match="overflows the float range"):
        steep.bind()


def test_a_custom_annealing_that_returns_nan_raises_naming_it():
    def broken(p):
        return math.nan if p > 0.5 else p

    bound = Schedule([0, 1], [0.0, 1.0], anneal=broken).bind()
    assert bound(0.25) == 0.25
    with pytest.raises(ValueError, match=r"annealing function broken returned nan at p=0\.75"):
        bound(0.75)
    with pytest.raises(ValueError, match="annealing function broken returned nan"):
        bound.table(np.array([0.75]))


def test_period_mult_below_one_and_many_cycles_stay_finite_and_quick():
    s = cosine_restarts(100, 1.0, cycles=2000, period_mult=0.5)  # the periods shrink below float spacing
    values = s.values(300)
    assert np.isfinite(values).all() and values[0] == 1.0 and values[100] == 1.0


# ----------------------------------------------------------------------------------------------- the property
EDGE = [
    0,
    1,
    2,
    3,
    -1,
    0.5,
    0.3,
    1.0,
    1e-300,
    1e300,
    -1e308,
    1e308,
    5e-324,
    10**400,
    NAN,
    INF,
    -INF,
    np.int64(4),
    np.float32(0.25),
    torch.tensor(3),
    torch.tensor(0.75),
    torch.tensor([1.0]),
    "3",
    None,
    True,
]
wild = st.one_of(st.sampled_from(EDGE), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6))


@st.composite
def mostly(draw, plausible, wild=wild):
    """Nine draws in ten plausible, one wild: so that most schedules are accepted and then evaluated."""
    return draw(wild) if draw(st.integers(min_value=0, max_value=9)) == 9 else draw(plausible)


pos = mostly(st.one_of(st.floats(min_value=0.01, max_value=20), st.integers(min_value=1, max_value=20)))
frac = mostly(st.floats(min_value=0.01, max_value=1))
real = mostly(st.floats(min_value=-5, max_value=5))
count = mostly(st.integers(min_value=1, max_value=12))
anneal = mostly(st.sampled_from(["linear", "cos", "sin", "exp", "step", "pchip"]), st.sampled_from(["x", 3, None]))
unit = mostly(st.sampled_from(["step", "epoch"]), st.sampled_from(["fraction", "week", None]))


@st.composite
def piece(draw):
    """(knots from 0, values, anneal, unit): a piecewise schedule, mostly well formed."""
    gaps = draw(st.lists(pos, min_size=0, max_size=4))
    knots = [0]
    for g in gaps:
        try:
            knots.append(knots[-1] + g)
        except (TypeError, OverflowError, RuntimeError):  # a wild gap (a string, 10**400): keep it as a knot
            knots.append(g)
    values = draw(st.lists(real, min_size=len(knots), max_size=len(knots)))
    return knots, values, draw(anneal), draw(unit)


def plain(ks, vs, a, u):
    return Schedule(ks, vs, a, u)


BUILDERS = {
    "Schedule": st.builds(lambda p: Schedule(*p), piece()),
    "Schedule, wild knots": st.builds(
        lambda ks, vs, a, u: Schedule(ks, vs[: len(ks)] + [0.5] * (len(ks) - len(vs)), a, u),
        st.lists(wild, max_size=4),
        st.lists(wild, max_size=4),
        anneal,
        unit,
    ),
    "steps/epochs/fraction": st.builds(
        lambda f, x, y: Schedule([0, f(x)], [1.0, y], unit="step"),
        st.sampled_from([steps, epochs, fraction]),
        pos,
        real,
    ),
    "join": st.builds(lambda p, q, b: join([plain(*p), plain(*q)], [b]), piece(), piece(), pos),
    "repeat": st.builds(lambda p, c, m, d: repeat(plain(*p), c, period_mult=m, decay=d), piece(), count, pos, pos),
    "shift": st.builds(lambda p, dt: shift(plain(*p), dt), piece(), real),
    "stretch": st.builds(lambda p, f: stretch(plain(*p), f), piece(), pos),
    "scale": st.builds(lambda p, f: scale(plain(*p), f), piece(), real),
    "onecycle": st.builds(
        lambda t, p, pct, d, df, a, u: onecycle(t, p, pct_start=pct, div=d, div_final=df, anneal=a, unit=u),
        pos,
        pos,
        frac,
        pos,
        pos,
        anneal,
        unit,
    ),
    "onecycle_momentum": st.builds(
        lambda t, h, lo, pct, u: onecycle_momentum(t, h, lo, pct_start=pct, unit=u), pos, real, real, frac, unit
    ),
    "onecycle_torch": st.builds(
        lambda n, lr, pct, d, fd, tp: onecycle_torch(
            n, lr, pct_start=pct, div_factor=d, final_div_factor=fd, three_phase=tp
        ),
        count,
        pos,
        frac,
        pos,
        pos,
        st.sampled_from([True, False, False, 1]),
    ),
    "onecycle_torch_momentum": st.builds(
        lambda n, b, m, pct, tp: onecycle_torch_momentum(
            n, base_momentum=b, max_momentum=m, pct_start=pct, three_phase=tp
        ),
        count,
        real,
        real,
        frac,
        st.booleans(),
    ),
    "warmup_linear": st.builds(
        lambda w, t, p, s, u: warmup_linear(w, t, p, warmup_start=s, unit=u), count, count, real, real, unit
    ),
    "warmup_cosine": st.builds(
        lambda w, t, p, f, s: warmup_cosine(w, t, p, floor=f, warmup_start=s), count, count, real, real, real
    ),
    "cosine_restarts": st.builds(
        lambda p, pk, c, f, m, d, w, ws: cosine_restarts(
            p, pk, cycles=c, floor=f, period_mult=m, decay=d, warmup=w, warmup_start=ws
        ),
        pos,
        real,
        count,
        real,
        pos,
        pos,
        count,
        real,
    ),
    "step_lr": st.builds(lambda b, s, g, u: step_lr(b, s, g, unit=u), pos, count, frac, unit),
    "multistep_lr": st.builds(lambda b, ms, g: multistep_lr(b, ms, g), pos, st.lists(count, max_size=4), pos),
    "exponential_lr": st.builds(lambda b, g: exponential_lr(b, g), pos, frac),
    "linear_lr": st.builds(lambda b, s, e, t: linear_lr(b, s, e, t), pos, frac, frac, count),
    "constant_lr": st.builds(lambda b, f, t: constant_lr(b, f, t), pos, frac, count),
    "polynomial_lr": st.builds(lambda b, t, p: polynomial_lr(b, t, p), pos, count, pos),
    "product": st.builds(lambda p, b, g: product(plain(*p), step_lr(b, 2, g, unit=p[3])), piece(), pos, frac),
    # issue 25: the newer decays, shape annealings, limits and growth, composition of endless schedules
    "warmup_polynomial": st.builds(
        lambda w, t, p, e, pw, s: warmup_polynomial(w, t, p, end=e, power=pw, warmup_start=s),
        count,
        count,
        real,
        real,
        pos,
        real,
    ),
    "warmup_stable_decay": st.builds(
        lambda w, s, d, p, f, up, down: warmup_stable_decay(w, s, d, p, floor=f, warmup=up, decay=down),
        count,
        count,
        count,
        real,
        real,
        mostly(st.sampled_from(["linear", "cos", "1-sqrt"])),
        mostly(st.sampled_from(["linear", "cos", "1-sqrt"])),
    ),
    "inverse_sqrt": st.builds(lambda p, w, ts: inverse_sqrt(p, w, timescale=ts), real, count, pos),
    "linear_onecycle": st.builds(
        lambda n, p, a, b, d, fd: linear_onecycle(n, p, pct_start=a, pct_final=b, div_factor=d, final_div_factor=fd),
        mostly(st.integers(min_value=1, max_value=200)),
        real,
        frac,
        frac,
        pos,
        pos,
    ),
    "power and cosine annealings": st.builds(
        lambda p, e, k, c: Schedule(p[0], p[1], (cosine if c else power)(e, k), p[3]), piece(), pos, pos, st.booleans()
    ),
    "exponential_lr with end_value": st.builds(
        lambda b, g, e, ev: exponential_lr(b, g, every=e, end_value=ev), pos, pos, pos, mostly(st.floats(0, 50))
    ),
    "step_lr with end_value": st.builds(lambda b, s, g, ev: step_lr(b, s, g, end_value=ev), pos, count, pos, pos),
    "cosine_restarts, timm": st.builds(
        lambda p, c, w, k: cosine_restarts(p, 1.0, cycles=c, warmup=w, warmup_prefix=False, k_decay=k),
        pos,
        count,
        count,
        pos,
    ),
    "join with an endless part": st.builds(
        lambda p, b, g, at: join([plain(*p), exponential_lr(b, g, unit=p[3])], [at]), piece(), pos, frac, pos
    ),
    "repeat an endless schedule": st.builds(
        lambda b, g, c, per, m, d: repeat(step_lr(b, 2, g), c, period=per, period_mult=m, decay=d),
        pos,
        frac,
        count,
        pos,
        pos,
        pos,
    ),
    "shift, stretch, scale an endless schedule": st.builds(
        lambda b, g, dt, f, k: scale(stretch(shift(exponential_lr(b, g), dt), f), k), pos, frac, real, pos, real
    ),
}


def construct(draw_thunk):
    try:
        return draw_thunk()
    except (ValueError, TypeError):
        return None


@pytest.mark.parametrize("name", list(BUILDERS))
@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_accepted_schedule_yields_only_finite_values(name, data):
    try:
        schedule = data.draw(BUILDERS[name])
    except (ValueError, TypeError):
        return  # refused, in the caller's terms: the other tests check the messages
    try:
        bound = schedule.bind(steps_per_epoch=3, n_epochs=4)
    except ValueError:
        return  # a geometry the schedule cannot take (its knots out of order on this axis, ...)
    knots = list(getattr(bound, "knots", [0.0]))
    hi = bound.horizon if math.isfinite(bound.horizon) else 1e4
    lo = min([*knots, 0.0])
    ts = np.concatenate([np.linspace(lo - 1, hi + 1, 41), np.asarray(knots, dtype=np.float64), [0.0, 1.0, 2.5]])
    table = bound.table(ts)
    scalar = np.array([bound(float(t)) for t in ts])
    assert np.isfinite(table).all(), (schedule, ts[~np.isfinite(table)])
    assert np.isfinite(scalar).all(), (schedule, ts[~np.isfinite(scalar)])
    assert np.isfinite(schedule.values(12, steps_per_epoch=3)).all()
