"""Schedules: annealing formulas worked by hand, units, composition, validation, and properties (hypothesis)."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from loopkit.schedules import Schedule, epoch_position, epochs, fraction, join, repeat, scale, shift, steps, stretch


def at(schedule, t, **geometry):
    return schedule.bind(**geometry)(t)


# ----------------------------------------------------------------------------------------------- annealing
@pytest.mark.parametrize(
    "anneal, p, expected",
    [
        ("linear", 0.25, 2.0 + 8.0 * 0.25),
        ("cos", 0.25, 2.0 + 8.0 * (1 - math.cos(math.pi / 4)) / 2),
        ("sin", 0.25, 2.0 + 8.0 * math.sin(math.pi / 8)),
        ("exp", 0.25, 2.0 * 5.0**0.25),
        ("step", 0.9, 2.0),
        (lambda p: p * p, 0.5, 2.0 + 8.0 * 0.25),
    ],
)
def test_each_annealing_follows_its_formula(anneal, p, expected):
    s = Schedule([0, 1], [2.0, 10.0], anneal=anneal)
    assert at(s, p) == pytest.approx(expected, rel=1e-15)
    assert s.bind().table(np.array([p]))[0] == pytest.approx(expected, rel=1e-15)


def test_steps_count_from_zero_and_the_ends_hold():
    s = Schedule([0, 10], [1.0, 0.0], unit="step")
    curve = s.values(13)
    assert curve[0] == 1.0  # step 0 is the first knot's value
    assert curve[5] == 0.5
    assert curve[10:].tolist() == [0.0, 0.0, 0.0]  # after the last knot the last value holds
    shifted = Schedule([5, 10], [1.0, 0.0], unit="step")
    assert shifted.values(6).tolist()[:6] == [1.0] * 6  # before the first knot, the first value


def test_one_knot_is_a_constant():
    assert Schedule([0], [0.3]).values(5, steps_per_epoch=2).tolist() == [0.3] * 5


def test_epoch_position_and_values_use_the_same_arithmetic():
    s = Schedule([0, 3], [0.0, 3.0])
    curve = s.values(21, steps_per_epoch=7)
    bound = s.bind(steps_per_epoch=7, n_epochs=3)
    assert curve.tolist() == [bound(epoch_position(e, b, 7)) for e in range(3) for b in range(7)]


def test_fractions_of_the_fit():
    s = Schedule([0, 0.5, 1], [0.0, 1.0, 0.0], unit="fraction")
    b = s.bind(steps_per_epoch=10, n_epochs=4)
    assert b.axis == "epoch" and b.knots == [0.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="need n_epochs"):
        s.bind(steps_per_epoch=10)


def test_mixed_units_warm_up_in_steps_then_anneal_in_epochs():
    s = Schedule([0, steps(500), 10], [0.0, 1e-3, 0.0])
    b = s.bind(steps_per_epoch=250, n_epochs=10)
    assert b.axis == "epoch" and b.knots == [0.0, 2.0, 10.0]
    assert b(1.0) == pytest.approx(5e-4, rel=1e-15)
    with pytest.raises(ValueError, match=r"mixes steps with epochs.*express every knot in steps"):
        s.bind(steps_per_epoch=None, n_epochs=10)
    with pytest.raises(ValueError, match="not strictly increasing"):
        Schedule([0, steps(5000), 10], [0, 1, 0]).bind(steps_per_epoch=250, n_epochs=10)
    mixed = Schedule([fraction(0), epochs(1), steps(300)], [0, 1, 2], unit="step")
    assert mixed.bind(steps_per_epoch=100, n_epochs=4).knots == [0.0, 1.0, 3.0]


def test_scalar_and_vectorised_paths_agree():
    s = Schedule([0, 1, 2.5, 4, 6], [0.1, 1.0, 0.3, 0.3, 1e-4], anneal=["sin", "cos", "linear", "exp"])
    b = s.bind(steps_per_epoch=10, n_epochs=6)
    ts = np.linspace(-1, 7, 1001)
    table = b.table(ts)
    for t, v in zip(ts, table):
        # numpy's and libm's cos/sin may round differently in the last place.
        assert b(float(t)) == pytest.approx(v, rel=4e-16, abs=1e-300)


def test_smooth_curve_passes_through_every_point_without_overshoot():
    knots, values = [0, 1, 2, 3, 4, 5], [0.0, 0.1, 0.8, 0.9, 0.95, 1.0]
    s = Schedule.smooth(knots, values)
    b = s.bind(steps_per_epoch=100, n_epochs=5)
    assert [b(float(k)) for k in knots] == pytest.approx(values, rel=1e-15)
    curve = b.table(np.linspace(0, 5, 501))
    assert np.all(np.diff(curve) >= 0) and curve.min() >= 0 and curve.max() <= 1
    assert b(0.5) == pytest.approx(float(b.table(np.array([0.5]))[0]), rel=1e-15)


# ----------------------------------------------------------------------------------------------- composition
def test_join_plays_schedules_from_their_own_zero():
    warm = Schedule([0, 100], [0.0, 1.0], unit="step")
    decay = Schedule([0, 900], [1.0, 0.0], anneal="cos", unit="step")
    b = join([warm, decay], [100]).bind()
    assert b(50) == 0.5 and b(100) == 1.0
    assert b(550) == pytest.approx((1 + math.cos(math.pi * 0.5)) / 2, rel=1e-15)
    assert b(2000) == 0.0


def test_join_cuts_a_schedule_at_the_boundary_and_jumps():
    up = Schedule([0, 10], [0.0, 1.0], unit="step")  # cut at 4: reaches 0.4
    flat = Schedule([0], [0.1], unit="step")
    b = join([up, flat], [4]).bind()
    assert [b(t) for t in (0, 2, 3.999)] == pytest.approx([0.0, 0.2, 0.3999], rel=1e-12)
    assert b(4) == 0.1 and b(100) == 0.1


def test_repeat_makes_warm_restarts_with_growing_periods_and_decay():
    cycle = Schedule([0, 10], [1.0, 0.0], unit="step")
    b = repeat(cycle, 3, period_mult=2.0, decay=0.5).bind()
    # cycles: [0, 10) peak 1, [10, 30) peak 0.5, [30, 70) peak 0.25
    assert [b(t) for t in (0, 5, 10, 20, 30, 50, 70, 99)] == pytest.approx(
        [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.0, 0.0], rel=1e-15
    )


def optax_join(schedules, boundaries):
    """optax.join_schedules written out: schedule i from boundaries[i-1] (inclusive), seeing t - boundary."""

    def schedule(t):
        i = sum(t >= b for b in boundaries)
        return schedules[i](t - (boundaries[i - 1] if i else 0))

    return schedule


def test_composition_at_its_smallest_and_edge_arguments_matches_its_reference():
    one = Schedule([0], [0.3], unit="step")  # a constant
    ramp = Schedule([0, 1], [0.0, 1.0], unit="step")  # one step long
    down = Schedule([0, 2], [1.0, 0.5], anneal="cos", unit="step")
    joined = join([ramp, one, down], [1, 2]).bind()
    ref = optax_join([ramp.bind(), one.bind(), down.bind()], [1, 2])
    assert [joined(t) for t in (0, 0.5, 1, 1.5, 2, 3, 4, 9)] == pytest.approx(
        [ref(t) for t in (0, 0.5, 1, 1.5, 2, 3, 4, 9)], rel=1e-15
    )
    assert join([down], []).values(4).tolist() == down.values(4).tolist()
    # one cycle is the schedule itself; identity factors change nothing
    for same in (repeat(down, 1), shift(down, 0), stretch(down, 1), scale(down, 1)):
        assert same.values(5).tolist() == down.values(5).tolist()
    # a one-step cycle repeated restarts at every step (torch's CosineAnnealingWarmRestarts with T_0=1)
    assert repeat(ramp, 3).values(4).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_shift_stretch_scale():
    s = Schedule([0, 4], [1.0, 0.0], unit="step")
    assert shift(s, 2).bind()(4) == 0.5
    assert stretch(s, 2).bind()(4) == 0.5
    assert scale(s, 3).bind()(2) == 1.5


def test_composition_rejects_mixed_units():
    with pytest.raises(ValueError, match="one unit"):
        join([Schedule([0, 1], [0, 1], unit="step"), Schedule([0, 1], [1, 0])], [5])
    with pytest.raises(ValueError, match="mixes units"):
        shift(Schedule([0, steps(5), 1], [0, 1, 0]), 1)


# ----------------------------------------------------------------------------------------------- plain data
def test_repr_equality_and_pickling():
    s = Schedule([0, steps(10), 3], [0.0, 1.0, 0.5], anneal=["linear", "cos"])
    assert repr(s) == "Schedule([0.0, steps(10.0), 3.0], [0.0, 1.0, 0.5], anneal=['linear', 'cos'], unit='epoch')"
    assert pickle.loads(pickle.dumps(s)) == s
    assert s != Schedule([0, steps(10), 3], [0.0, 1.0, 0.5])


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (([0, 2, 1], [0, 1, 2]), {}, ValueError, r"strictly increasing, got \[0, 2, 1\]"),
        (([0, 1, 1], [0, 1, 2]), {}, ValueError, "strictly increasing"),
        (([0, 1], [0, float("nan")]), {}, ValueError, "value nan"),
        (([0, float("inf")], [0, 1]), {}, ValueError, "knot inf"),
        (([0, 1, 2], [0, 1]), {}, ValueError, r"3 knots .* but 2 values"),
        (([0, 1], [0, 1]), {"anneal": "cosine"}, ValueError, r"unknown annealing 'cosine'; use one of"),
        (([0, 1], [0, 1]), {"anneal": "exp"}, ValueError, "from 0.0 to 1.0, so both must be nonzero"),
        (([0, 1], [1, -1]), {"anneal": "exp"}, ValueError, "same sign"),
        (([0, 1, 2], [0, 1, 2]), {"anneal": ["linear"]}, ValueError, "1 annealings"),
        (([0, 1], [0, 1]), {"unit": "minutes"}, ValueError, "unknown unit 'minutes'"),
        (([0, 1], [0, 1]), {"anneal": 3}, TypeError, "anneal must be a name or a function"),
        (([], []), {}, ValueError, "at least one knot"),
        (("01", [0, 1]), {}, TypeError, "sequence of times"),
        (([0, True], [0, 1]), {}, ValueError, "knot True"),
    ],
)
def test_bad_schedules_fail_at_construction_quoting_the_value(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        Schedule(*args, **kwargs)


def test_bad_markers_and_values_arguments():
    with pytest.raises(ValueError, match=r"steps\(n=nan\): n must be a finite number"):
        steps(float("nan"))
    with pytest.raises(ValueError, match="n_steps=-1"):
        Schedule([0, 1], [0, 1], unit="step").values(-1)
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        Schedule([0, 1], [0, 1]).values(3)


# ----------------------------------------------------------------------------------------------- properties
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    a=finite,
    b=finite,
    length=st.floats(min_value=1e-3, max_value=1e4),
    anneal=st.sampled_from(["linear", "cos", "sin"]),
    ps=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=20),
)
def test_segments_stay_within_endpoints_and_are_monotone(a, b, length, anneal, ps):
    bound = Schedule([0, length], [a, b], anneal=anneal).bind()
    ts = sorted(p * length for p in ps)
    values = [bound(t) for t in ts]
    lo, hi = min(a, b), max(a, b)
    slack = 4e-16 * max(abs(a), abs(b))  # one rounding of the largest operand
    assert all(lo - slack <= v <= hi + slack for v in values)
    pairs = list(itertools.pairwise(values))
    if b >= a:
        assert all(v1 >= v0 - slack for v0, v1 in pairs)
    else:
        assert all(v1 <= v0 + slack for v0, v1 in pairs)


@settings(max_examples=200, deadline=None)
@given(
    a=st.floats(min_value=1e-6, max_value=1e3),
    b=st.floats(min_value=1e-6, max_value=1e3),
    ps=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=20),
)
def test_exp_segments_are_geometric_within_endpoints_and_monotone(a, b, ps):
    bound = Schedule([0, 1], [a, b], anneal="exp").bind()
    values = [bound(p) for p in sorted(ps)]
    lo, hi = min(a, b) * (1 - 1e-14), max(a, b) * (1 + 1e-14)
    assert all(lo <= v <= hi for v in values)
    ordered = values if b >= a else values[::-1]
    assert all(y >= x * (1 - 1e-14) for x, y in itertools.pairwise(ordered))


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(finite, min_size=3, max_size=6),
    anneals=st.lists(st.sampled_from(["linear", "cos", "sin"]), min_size=5, max_size=5),
)
def test_continuous_at_every_knot(values, anneals):
    knots = [float(i) for i in range(len(values))]
    bound = Schedule(knots, values, anneal=anneals[: len(values) - 1]).bind()
    scale_ = max(1.0, max(abs(v) for v in values))
    for k, v in zip(knots, values):
        assert bound(k) == pytest.approx(v, rel=1e-12, abs=1e-12 * scale_)
        # the left and right limits converge to the knot value: within (slope * 1e-9) of it
        for side in (k - 1e-9, k + 1e-9):
            if knots[0] <= side <= knots[-1]:
                assert abs(bound(side) - v) <= 1e-8 * scale_
