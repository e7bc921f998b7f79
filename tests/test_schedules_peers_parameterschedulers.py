"""ParameterSchedulers.jl's tests (test/decay.jl, test/cyclic.jl, test/complex.jl), ported; and the schedule
protocol (a user's own schedule object) that two of them need.

ParameterSchedulers.jl draws its parameters at random and compares each schedule with a formula at iterations
``t = 1, 2, ...``; loopkit counts steps from 0, so Julia's ``t`` is loopkit's step ``t - 1``. Here the draws come
from a seeded generator (five per case) and the formulas are written out in Python; compared at 1e-9 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loopkit import Learner
from loopkit.schedules import (
    Schedule,
    exponential_lr,
    join,
    multistep_lr,
    polynomial_lr,
    repeat,
)
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from loopkit.scheduling.scheduler import Scheduler

REL = 1e-9
DRAWS = [np.random.default_rng(seed) for seed in range(5)]


def close(ours, expected):
    assert len(ours) == len(expected)
    for k, (a, b) in enumerate(zip(ours, expected)):
        assert a == pytest.approx(b, rel=REL, abs=1e-15), f"Julia t={k + 1}: {a!r} vs {b!r}"


# ------------------------------------------------------------------------------------------ a user's schedule
class Function:
    """A user's own schedule: any function of Julia's iteration ``t`` (loopkit's step + 1), following the
    protocol in loopkit.schedules.protocol: ``bind`` returns an object with ``axis``, ``horizon``,
    ``__call__`` and ``table``. It never ends (horizon inf)."""

    def __init__(self, fn):
        self.fn = fn

    def bind(self, *, steps_per_epoch=None, n_epochs=None):
        return _BoundFunction(self.fn)

    def values(self, n_steps):
        return self.bind().table(np.arange(n_steps, dtype=np.float64))

    def __repr__(self):
        return f"Function({getattr(self.fn, '__name__', self.fn)})"


class _BoundFunction:
    axis = "step"
    horizon = math.inf
    open_from = 0.0  # any fit may end it: without this an endless schedule is refused by every finite fit

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, t):
        return float(self.fn(t + 1.0))

    def table(self, ts):
        return np.array([self(float(t)) for t in np.asarray(ts, dtype=np.float64)])


# ------------------------------------------------------------------------------------------------- decay.jl
@pytest.mark.parametrize("rng", DRAWS)
def test_step(
    rng,
):  # Step(lambda, gamma, step_sizes=[a, b]): gamma^(bucket - 1), buckets of a then b iterations, then gamma^2
    lam, gamma = rng.random(), rng.random()
    a, b = (int(x) for x in rng.integers(1, 11, size=2))
    ours = multistep_lr(lam, [a, a + b], gamma).values(100).tolist()

    def bucket(t):  # Julia's _getbucket: 1 + the number of cumulative sizes strictly below t
        return 1 + sum(1 for c in (a, a + b) if t > c)

    close(ours, [lam * gamma ** (bucket(t) - 1) for t in range(1, 101)])


@pytest.mark.parametrize("rng", DRAWS)
def test_exp(rng):  # Exp(lambda, gamma): lambda gamma^(t - 1)
    lam, gamma = rng.random(), rng.random()
    close(exponential_lr(lam, gamma).values(100).tolist(), [lam * gamma ** (t - 1) for t in range(1, 101)])


@pytest.mark.parametrize("rng", DRAWS)
def test_poly(rng):  # Poly(lambda, p, max_iter): lambda (1 - (t - 1) / max_iter)^p for t in 1:max_iter
    lam, p, max_iter = rng.random(), int(rng.integers(1, 21)), int(rng.integers(1, 101))
    ours = polynomial_lr(lam, max_iter, p).values(max_iter).tolist()
    close(ours, [lam * (1 - (t - 1) / max_iter) ** p for t in range(1, max_iter + 1)])


@pytest.mark.parametrize("rng", DRAWS)
def test_inv_as_a_users_schedule(
    rng,
):  # Inv(lambda, gamma, p): lambda / (1 + (t - 1) gamma)^p: no built-in, the protocol
    lam, gamma, p = rng.random(), rng.random(), int(rng.integers(1, 21))
    inv = Function(lambda t: lam / (1 + (t - 1) * gamma) ** p)
    close(inv.values(100).tolist(), [lam / (1 + (t - 1) * gamma) ** p for t in range(1, 101)])


# ------------------------------------------------------------------------------------------------ cyclic.jl
def cycle(l0, l1, x):
    return abs(l0 - l1) * x + min(l0, l1)


def tri(t, period):
    return (2 / math.pi) * abs(math.asin(math.sin(math.pi * (t - 1) / period)))


def sin_(t, period):
    return abs(math.sin(math.pi * (t - 1) / period))


def down_sine(q):
    """The second half of |sin|: from the top (q = 0) down to 0 (q = 1), as an annealing f with f(0) = 0."""
    return 1.0 - math.cos(math.pi * q / 2)


def one_cycle(lo, hi, period, shape):
    anneal = "linear" if shape == "tri" else ["sin", down_sine]
    return Schedule([0, period / 2, period], [lo, hi, lo], anneal=anneal, unit="step")


@pytest.mark.parametrize("shape", ["tri", "sin"])
@pytest.mark.parametrize("rng", DRAWS)
def test_triangle_and_sin(rng, shape):  # Triangle(lambda0, lambda1, period), Sin(lambda0, lambda1, period)
    l0, l1, period = rng.random(), rng.random(), int(rng.integers(1, 11))
    lo, hi = min(l0, l1), max(l0, l1)
    ours = repeat(one_cycle(lo, hi, period, shape), 100).values(100).tolist()
    f = tri if shape == "tri" else sin_
    close(ours, [cycle(l0, l1, f(t, period)) for t in range(1, 101)])


@pytest.mark.parametrize("shape", ["tri", "sin"])
@pytest.mark.parametrize("rng", DRAWS)
def test_triangle_and_sin_halving(rng, shape):  # TriangleDecay2, SinDecay2: the swing halves every period
    l0, l1, period = rng.random(), rng.random(), int(rng.integers(1, 11))
    lo, hi = min(l0, l1), max(l0, l1)
    n = -(-100 // period)
    cycles = [one_cycle(lo, lo + (hi - lo) / 2**i, period, shape) for i in range(n)]
    ours = join(cycles, [period * i for i in range(1, n)]).values(100).tolist()
    f = tri if shape == "tri" else sin_
    close(ours, [cycle(l0, l1, f(t, period) / 2 ** ((t - 1) // period)) for t in range(1, 101)])


@pytest.mark.parametrize("restart", [True, False])
@pytest.mark.parametrize("rng", DRAWS)
def test_cos_anneal(rng, restart):  # CosAnneal(lambda0, lambda1, period, restart)
    l0, l1, period = rng.random(), rng.random(), int(rng.integers(1, 11))
    lo, hi = min(l0, l1), max(l0, l1)
    if restart:  # down by a half cosine, then back to the top
        one = Schedule([0, period], [hi, lo], anneal="cos", unit="step")
        f = lambda t: (1 + math.cos(math.pi * ((t - 1) % period) / period)) / 2  # noqa: E731
    else:  # down and up again: a full cosine wave of twice the period
        one = Schedule([0, period, 2 * period], [hi, lo, hi], anneal="cos", unit="step")
        f = lambda t: (1 + math.cos(math.pi * (t - 1) / period)) / 2  # noqa: E731
    ours = repeat(one, 100).values(100).tolist()
    close(ours, [cycle(l0, l1, f(t)) for t in range(1, 101)])


# ----------------------------------------------------------------------------------------------- complex.jl
@pytest.mark.parametrize("rng", DRAWS)
def test_sequence_of_functions(rng):  # Sequence((log, sqrt), (a, b)): log(t) for t <= a, then sqrt(t - a)
    a = int(rng.integers(1, 11))
    ours = join([Function(math.log), Function(math.sqrt)], [a]).values(a + 20).tolist()
    close(ours, [math.sqrt(t - a) if t > a else math.log(t) for t in range(1, a + 21)])


@pytest.mark.parametrize("rng", DRAWS)
def test_sequence_of_values(rng):  # Sequence([p1, p2], (a, b)): p1, then p2
    a, (p1, p2) = int(rng.integers(1, 11)), rng.random(2)
    ours = join([Schedule([0], [p1], unit="step"), Schedule([0], [p2], unit="step")], [a]).values(a + 20).tolist()
    close(ours, [p2 if t > a else p1 for t in range(1, a + 21)])


@pytest.mark.parametrize("rng", DRAWS)
def test_loop(rng):  # Loop(log, period): log(mod1(t, period))
    period = int(rng.integers(1, 11))
    ours = repeat(Function(math.log), 100, period=period).values(100).tolist()
    close(ours, [math.log((t - 1) % period + 1) for t in range(1, 101)])


def test_a_users_schedule_drives_a_fit():
    # the Scheduler asks nothing more of a schedule than the protocol: Inv(lambda=0.1, gamma=0.5, p=2) over a 12-step fit
    inv = Function(lambda t: 0.1 / (1 + (t - 1) * 0.5) ** 2)
    model = torch.nn.Linear(1, 1)
    sched = Scheduler({LearningRate: inv})
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * 4
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched]).fit(3)
    close(sched.history["lr"], [0.1 / (1 + (t - 1) * 0.5) ** 2 for t in range(1, 13)])


def test_an_endless_users_schedule_without_open_from_is_refused_at_fit_start():
    class Endless(_BoundFunction):
        open_from = math.inf  # as if it did not say: open_from defaults to the horizon

    class Mine(Function):
        def bind(self, *, steps_per_epoch=None, n_epochs=None):
            return Endless(self.fn)

    model = torch.nn.Linear(1, 1)
    sched = Scheduler({LearningRate: Mine(math.log)})
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * 4
    learner = Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.functional.mse_loss, callbacks=[sched]
    )
    with pytest.raises(ValueError, match="ends at inf steps but the fit ends at 4"):
        learner.fit(1)
