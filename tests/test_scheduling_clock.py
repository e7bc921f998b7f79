"""The Scheduler's clock and domain checks as pure functions, against hand-worked values and dense evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopkit import LearningRate
from loopkit.schedules import Schedule, epoch_position, onecycle
from loopkit.scheduling import clock
from loopkit.scheduling.domain import Domain, Target, check_written, range_points


class Bound:
    def __init__(self, axis, horizon, open_from=None):
        self.axis, self.horizon = axis, horizon
        if open_from is not None:
            self.open_from = open_from


def test_geometry_counts_optimizer_steps_and_spreads_a_step_budget_over_epochs():
    assert clock.geometry(3, None, 10, 1) == (3, 10)
    assert clock.geometry(3, None, 10, 4) == (3, 3)  # ceil(10 / 4) optimizer steps an epoch
    assert clock.geometry(None, 25, 10, 1) == (2.5, 10)  # fit(max_steps=25): 2.5 epochs of 10 steps
    assert clock.geometry(None, 25, None, 1) == (None, None)  # data without a length
    assert clock.geometry(2, 5, 10, 1) == (2, 10)  # an epoch count wins over max_steps


@pytest.mark.parametrize(
    ("policy", "horizon", "expected"),
    [
        ("error", 40.0, (0.0, 1.0)),  # ends before the fit: holds its last value
        ("hold", 80.0, (0.0, 1.0)),  # ends after: keeps its timing
        ("stretch", 80.0, (0.0, 2.0)),  # 80 steps laid over a 40-step fit
        ("stretch", 20.0, (0.0, 0.5)),  # 20 steps extended over it
        ("stretch", math.inf, (0.0, 1.0)),  # an endless schedule keeps its timing
    ],
)
def test_horizon_map_per_policy(policy, horizon, expected):
    assert clock.horizon_map("lr", Bound("step", horizon), (4, 10), policy) == expected


def test_horizon_map_refuses_a_schedule_longer_than_the_fit_unless_it_is_open_from_inside_it():
    with pytest.raises(ValueError, match="the schedule for lr ends at 80 steps but the fit ends at 40"):
        clock.horizon_map("lr", Bound("step", 80.0), (4, 10), "error")
    assert clock.horizon_map("lr", Bound("step", 80.0, open_from=30.0), (4, 10), "error") == (0.0, 1.0)
    with pytest.raises(ValueError, match="has no length"):
        clock.horizon_map("lr", Bound("step", 80.0), (None, None), "stretch")
    assert clock.fit_end("epoch", (4, 10)) == 4.0 and clock.fit_end("step", (4, None)) is None


@pytest.mark.parametrize("saved_epochs,now_epochs", [(4, 6), (6, 4), (4, 5)])
def test_a_stretched_resume_is_continuous_at_the_resume_point_and_ends_where_the_schedule_did(saved_epochs, now_epochs):
    bound, here = Bound("epoch", 8.0), 2.5
    old = clock.horizon_map("lr", bound, (saved_epochs, 10), "stretch")
    offset, scale = clock.stretched_map(bound, old, (saved_epochs, 10), (now_epochs, 10), here)
    assert offset + here * scale == pytest.approx(old[0] + here * old[1], rel=1e-15)  # no jump at the resume
    assert offset + now_epochs * scale == pytest.approx(8.0, rel=1e-15)  # the new end meets the schedule's end
    with pytest.raises(ValueError, match="before now"):
        clock.stretched_map(bound, old, (saved_epochs, 10), (2, 10), here)


def test_phase_timelines_reproduce_epoch_position_element_by_element():
    index = np.arange(7, dtype=np.float64)
    origin, divisor, limit = clock.phase_timeline("step", False, 0, 3, 7)
    times = clock.schedule_times(index, origin, divisor, 0.0, 1.0)
    assert times.tolist() == [epoch_position(3, b, 7) for b in range(7)] and limit == 7
    origin, divisor, limit = clock.phase_timeline("step", True, 40, 3, 7)
    assert clock.schedule_times(index, origin, divisor, 1.0, 0.5).tolist() == [1.0 + (40 + i) * 0.5 for i in range(7)]
    assert clock.phase_timeline("epoch", True, 40, 3, 7) == (40, 1, 1)  # one value, at the epoch's first step
    assert clock.phase_timeline("epoch", False, 40, 3, 7) == (3, 1, 1)
    assert clock.position(False, 99, 2, 3, 4) == 2.75 and clock.position(True, 99, 2, 3, 4) == 99.0


def test_last_application_is_the_time_of_the_fits_last_value():
    assert clock.last_application("step", True, (3, 10), 10) == 29  # step 29 of 30
    assert clock.last_application("step", False, (3, 10), 10) == pytest.approx(2.9, rel=1e-15)  # batch 9 of epoch 2
    assert clock.last_application("epoch", True, (2.5, 10), 10) == 20  # epoch 2 starts at step 20
    assert clock.last_application("epoch", False, (2.5, 10), 10) == 2
    assert clock.last_application("step", True, (None, None), None) is None


def test_range_points_bound_every_value_a_built_in_schedule_takes():
    bound = onecycle(4, 0.1).bind(steps_per_epoch=10, n_epochs=4)
    for t0, t1 in [(0.0, 4.0), (1.3, 3.1), (2.0, None)]:
        times, values = range_points(bound, t0, t1)
        assert times[0] == t0 and np.all(times[1:] >= t0) and (t1 is None or times[-1] == t1)
        dense = np.asarray(bound.table(np.linspace(t0, 4.0 if t1 is None else t1, 4001)))
        assert values.min() <= dense.min() and dense.max() <= values.max()
        assert values.min() == pytest.approx(dense.min(), rel=1e-6) and values.max() == pytest.approx(
            dense.max(), rel=1e-6
        )
    assert range_points(Schedule([0, 1], [1.0, 0.0], anneal=lambda a, b, p: a).bind(n_epochs=1), 0.0, 1.0) is None


def test_check_written_quotes_the_value_written_where_and_when():
    class Half(LearningRate):
        def targets(self):
            return [Target("param group 1 lr", 0.5, Domain(0.0, 0.04, why="a test's rule"))]

    values, times = np.array([0.02, 0.06, 0.1]), np.array([0.0, 1.0, 2.0])
    check_written(Half(), "S", values[:2], times[:2], "epoch")  # 0.01 and 0.03 are inside
    with pytest.raises(ValueError, match=r"would write 0\.05 to param group 1 lr \(the schedule's 0\.1 times the "):
        check_written(Half(), "S", values, times, "epoch")
