"""PyTorch-Ignite's parameter-scheduler tests (tests/ignite/handlers/test_param_scheduler.py), ported.

Ignite lists the values a run applies, event by event (its first event is step 0, as in loopkit), and compares
with pytest.approx (rel 1e-6). Here they are compared at 1e-9 relative (Ignite's listed 0.3 is
``0.4 + 0.2 * (0.5 - 1)`` rounded, so an absolute 1e-12 allows for the last bit of a listed decimal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopkit.schedules import Schedule, exponential_lr, join, repeat, step_lr

REL = 1e-9


def close(ours, expected):
    assert len(ours) == len(expected)
    for k, (a, b) in enumerate(zip(ours, expected)):
        assert a == pytest.approx(b, rel=REL, abs=1e-12), f"event {k}: {a!r} vs Ignite {b!r}"


def linear_cyclical(start, end, cycle_size, cycles=10, cycle_mult=1.0):
    """Ignite's LinearCyclicalScheduler: start -> end at half the cycle -> back to start, repeated."""
    half = cycle_size / 2
    return repeat(Schedule([0, half, cycle_size], [start, end, start], unit="step"), cycles, period_mult=cycle_mult)


def cosine_annealing(start, end, cycle_size, cycles=10, warmup=0):
    """Ignite's CosineAnnealingScheduler: start -> end by a half cosine, then (optionally linearly back over
    ``warmup`` events) restart."""
    if warmup:
        one = Schedule([0, cycle_size, cycle_size + warmup], [start, end, start], anneal=["cos", "linear"], unit="step")
    else:
        one = Schedule([0, cycle_size], [start, end], anneal="cos", unit="step")
    return repeat(one, cycles)


CYCLE = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.2, 0.4, 0.6, 0.8]
COSINE = [
    0.0,
    0.02447174185242318,
    0.09549150281252627,
    0.20610737385376332,
    0.3454915028125263,
    0.5,
    0.6545084971874737,
    0.7938926261462365,
    0.9045084971874737,
    0.9755282581475768,
]


def test_linear_scheduler():  # LinearCyclicalScheduler(opt, "lr", 1, 0, 10), 20 events
    close(linear_cyclical(1.0, 0.0, 10).values(20).tolist(), CYCLE * 2)


def test_linear_scheduler_cycle_mult():  # ... cycle_mult=2, 30 events
    cycle2 = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    close(linear_cyclical(1.0, 0.0, 10, cycle_mult=2).values(30).tolist(), CYCLE + cycle2)


def monotonic(start, end, cycle_size, warmup, cycle_mult=1.0):
    """Ignite's LinearCyclicalScheduler(warmup_duration=w, monotonic=True): start -> end over the cycle, then
    linearly back to start over w events."""
    one = Schedule([0, cycle_size, cycle_size + warmup], [start, end, start], unit="step")
    return repeat(one, 10, period_mult=cycle_mult)


def test_linear_scheduler_warmup_duration():  # (1, 0, 10, warmup_duration=5, monotonic=True), 20 events
    expected = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.9, 0.8, 0.7, 0.6]
    close(monotonic(1.0, 0.0, 10, 5).values(20).tolist(), expected)


def test_linear_scheduler_warmup_duration_cycle_mult():  # ... cycle_mult=2, 30 events
    first = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.2, 0.4, 0.6, 0.8]
    second = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3]
    close(monotonic(1.0, 0.0, 10, 5, cycle_mult=2).values(30).tolist(), first + second)


def test_linear_scheduler_cycle_size_two():  # (1, 0, cycle_size=2), 20 events
    close(linear_cyclical(1.0, 0.0, 2).values(20).tolist(), [1.0, 0.0] * 10)


@pytest.mark.parametrize("cyclic_warmup", [False, True])
def test_cosine_annealing_scheduler(cyclic_warmup):  # CosineAnnealingScheduler(opt, "lr", 0, 1, 10, warmup 2 or 0)
    warmup = 2 if cyclic_warmup else 0
    n = 2 * (10 + int(cyclic_warmup))
    ours = cosine_annealing(0.0, 1.0, 10, warmup=warmup).values(n).tolist()
    in_warmup = [1.0, 0.5] if cyclic_warmup else []
    close(ours, (COSINE + in_warmup + COSINE)[:n])


@pytest.mark.parametrize("as_np_int", [False, True])
def test_concat_scheduler_two_schedulers(as_np_int):  # ConcatScheduler([linear 1->0 (10), cosine 0->1 (10)], [10])
    durations = [np.int64(10)] if as_np_int else [10]
    s = join([linear_cyclical(1.0, 0.0, 10), cosine_annealing(0.0, 1.0, 10)], durations)
    close(s.values(20).tolist(), CYCLE + COSINE)


def test_concat_scheduler_two_linear():  # [LinearCyclical(0, 0.1, 2), LinearCyclical(0.2, 1.0, 2)], durations [5]
    s = join([linear_cyclical(0.0, 0.1, 2), linear_cyclical(0.2, 1.0, 2)], [5])
    close(s.values(20).tolist(), [0.0, 0.1, 0.0, 0.1, 0.0] + [0.2, 1.0] * 7 + [0.2])


def test_concat_scheduler_3_schedulers():  # (1 -> 0.5, 20), (0.5 -> 0.45, 10), (0.5 -> 0, 20), durations [10, 5]
    s = join([linear_cyclical(1.0, 0.5, 20), linear_cyclical(0.5, 0.45, 10), linear_cyclical(0.5, 0.0, 20)], [10, 15])
    expected = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.49, 0.48, 0.47, 0.46]
    close(s.values(20).tolist(), [*expected, 0.5, 0.45, 0.4, 0.35, 0.3])


@pytest.mark.parametrize("as_np_int", [False, True])
def test_piecewise_linear(as_np_int):  # PiecewiseLinear([(5, 0.5), (15, 1.0), (25, 0.0), (35, 1.0), (40, 0.5)])
    knots = [np.int64(k) for k in (5, 15, 25, 35, 40)] if as_np_int else [5, 15, 25, 35, 40]
    s = Schedule(knots, [0.5, 1.0, 0.0, 1.0, 0.5], unit="step")
    expected = [0.5] * 6 + [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    expected += [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    expected += [0.9, 0.8, 0.7, 0.6] + [0.5] * 10
    close(s.values(50).tolist(), expected)


def with_warmup(scheduler, first_value, start, end, duration):
    """Ignite's create_lr_scheduler_with_warmup: linear from ``start`` at event 0 to ``end`` at event
    ``duration - 1``, then the scheduler from its first value; when that first value equals ``end`` Ignite
    skips it (the warmup's last event already applied it), which is the scheduler joined one event earlier."""
    ramp = Schedule([0, duration - 1], [start, end], unit="step")
    return join([ramp, scheduler], [duration - 1 if end == first_value else duration])


@pytest.mark.parametrize(
    "name, start, end, duration, next_value",
    [
        ("ExponentialLR", 0.01, 0.05, 10, 0.2),  # A) optimizer lr != warmup_end_value
        ("ExponentialLR", 0.01, 0.05, 2, 0.2),
        ("ExponentialLR", 0.01, 0.2, 10, 0.2 * 0.98),  # B) optimizer lr == warmup_end_value
        ("ExponentialLR", 0.01, 0.2, 2, 0.2 * 0.98),
        ("LinearCyclicalScheduler", 0.01, 0.05, 10, 0.8),  # C) start_value != warmup_end_value
        ("LinearCyclicalScheduler", 0.01, 0.05, 2, 0.8),
        ("LinearCyclicalScheduler", 0.01, 0.8, 10, 0.8 - (0.8 / 5.0)),  # D) start_value == warmup_end_value
        ("LinearCyclicalScheduler", 0.01, 0.8, 2, 0.8 - (0.8 / 5.0)),
        ("ExponentialLR", 0.01, None, 10, 0.2 * 0.98),  # E) warmup_end_value None: the optimizer's lr, as B
    ],
)
def test_create_lr_scheduler_with_warmup(name, start, end, duration, next_value):
    if name == "ExponentialLR":  # torch's ExponentialLR(gamma=0.98) on an optimizer at lr 0.2
        scheduler, first = exponential_lr(0.2, 0.98), 0.2
    else:  # LinearCyclicalScheduler(start_value=0.8, end_value=0.0, cycle_size=10)
        scheduler, first = linear_cyclical(0.8, 0.0, 10, cycles=30), 0.8
    end = first if end is None else end
    lrs = with_warmup(scheduler, first, start, end, duration).values(200).tolist()
    close([lrs[0], lrs[duration - 1], lrs[duration]], [start, end, next_value])


def test_create_lr_scheduler_with_warmup_with_real_model():  # StepLR(step_size=2, gamma=0.97) at lr 0.01
    lrs = with_warmup(step_lr(0.01, 2, 0.97), 0.01, 0.0, 0.02, 5).values(50).tolist()
    close([lrs[0], lrs[4], lrs[5], lrs[7]], [0.0, 0.02, 0.01, 0.01 * 0.97])


@pytest.mark.parametrize(
    "name, schedule, formula",
    [
        ("ExponentialLR(gamma=0.78)", exponential_lr(0.01, 0.78), lambda t: 0.01 * 0.78**t),
        ("MultiplicativeLR(lambda epoch: 0.95)", exponential_lr(0.01, 0.95), lambda t: 0.01 * 0.95**t),
        ("StepLR(step_size=5, gamma=0.5)", step_lr(0.01, 5, 0.5), lambda t: 0.01 * 0.5 ** (t // 5)),
    ],
)
def test_lr_scheduler(name, schedule, formula):  # Ignite's LRScheduler over torch's, lr 0.01, 20 events
    close(schedule.values(20).tolist(), [formula(t) for t in range(20)])
    assert math.isinf(schedule.bind().horizon)  # torch's schedulers never end; neither do these
