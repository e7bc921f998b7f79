"""Per-step framework overhead: a raw loop vs the Learner, with and without a per-step Scheduler.

One epoch of a tiny MLP (Linear(32,64)-ReLU-Linear(64,1)), batch 16, 2000 in-memory batches, SGD with
momentum, one thread, three ways in one run:

- ``raw``: a hand-written loop;
- ``learner``: ``Learner`` with no callbacks;
- ``learner_sched``: ``Learner`` with a per-step ``Scheduler`` (one-cycle lr and momentum) and a callback
  recording the loss tensor of every step (no host sync).

Each case reports, besides pytest-benchmark's timings, ``extra_info``: seconds per step, overhead per step
over the raw loop in microseconds (from the medians) and Python function calls per step counted by cProfile
(calls into C functions included), and the difference to the raw loop. Run:

    pytest benchmarks/bench_overhead.py --benchmark-only --benchmark-columns=median,iqr,rounds -s
"""

from __future__ import annotations

import copy
import cProfile
import pstats

import pytest
import torch

from loopkit import Learner
from loopkit.hyperparams import LearningRate, Momentum
from loopkit.scheduler import Scheduler
from loopkit.schedules import onecycle, onecycle_momentum

N_BATCHES = 2000
ROUNDS = 7
RESULTS: dict[str, dict[str, float]] = {}


class RecordLoss:
    """Keeps the loss tensor of every step, as a logger that syncs once per epoch would."""

    reads = ("loss",)

    def __init__(self):
        self.losses = []

    def after_loss(self, learner):
        self.losses.append(learner.loss.detach())


def _problem():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    data = [(torch.randn(16, 32), torch.randn(16, 1)) for _ in range(N_BATCHES)]
    return model, data


def _raw(model, data):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.functional.mse_loss

    def run():
        model.train()
        for xb, yb in data:
            pred = model(xb)
            loss = loss_fn(pred, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def _learner(model, data, with_scheduler):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    callbacks = []
    if with_scheduler:
        callbacks = [Scheduler({LearningRate: onecycle(1, 0.01), Momentum: onecycle_momentum(1)}), RecordLoss()]
    learner = Learner(model, data, optimizer, torch.nn.functional.mse_loss, callbacks=callbacks)
    return lambda: learner.fit(1)


CASES = {
    "raw": lambda m, d: _raw(m, d),
    "learner": lambda m, d: _learner(m, d, False),
    "learner_sched": lambda m, d: _learner(m, d, True),
}


def _calls_per_step(run) -> float:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    return pstats.Stats(profiler).total_calls / N_BATCHES


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_overhead(benchmark, case):
    model, data = _problem()
    run = CASES[case](copy.deepcopy(model), data)
    run()  # warm up allocator and autograd caches
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    per_step = benchmark.stats.stats.median / N_BATCHES
    calls = _calls_per_step(run)
    RESULTS[case] = {"s_per_step": per_step, "calls_per_step": calls}
    benchmark.extra_info.update(us_per_step=per_step * 1e6, calls_per_step=calls)
    if "raw" in RESULTS and case != "raw":
        raw = RESULTS["raw"]
        benchmark.extra_info.update(
            overhead_us_per_step=(per_step - raw["s_per_step"]) * 1e6,
            ratio_to_raw=per_step / raw["s_per_step"],
            extra_calls_per_step=calls - raw["calls_per_step"],
        )
    print(f"\n{case}: {per_step * 1e6:.2f} us/step, {calls:.1f} calls/step, extra: {benchmark.extra_info}")


def test_interleaved_ratios(benchmark):
    """Each round times raw, learner and learner_sched back to back; ratios are medians of per-round ratios.

    On a shared machine the sequential cases above drift by several percent between cases; comparing within a
    round cancels that drift, so these are the ratios to quote.
    """
    import statistics
    import time

    model, data = _problem()
    runs = {case: make(copy.deepcopy(model), data) for case, make in CASES.items()}
    for run in runs.values():
        run()
    rounds: list[dict[str, float]] = []

    def one_round():
        times = {}
        for case, run in runs.items():
            start = time.perf_counter()
            run()
            times[case] = time.perf_counter() - start
        rounds.append(times)

    benchmark.pedantic(one_round, rounds=ROUNDS * 2, iterations=1)
    for case in ("learner", "learner_sched"):
        ratio = statistics.median(r[case] / r["raw"] for r in rounds)
        overhead = statistics.median((r[case] - r["raw"]) / N_BATCHES * 1e6 for r in rounds)
        benchmark.extra_info[f"{case}_ratio"] = ratio
        benchmark.extra_info[f"{case}_overhead_us_per_step"] = overhead
        print(f"\n{case}: median per-round ratio to raw {ratio:.3f}, overhead {overhead:.1f} us/step")
