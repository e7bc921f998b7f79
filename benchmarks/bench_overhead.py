"""Per-step framework overhead: hand-written loops vs the Learner with the same features, interleaved.

One epoch of a tiny MLP (Linear(32,64)-ReLU-Linear(64,1)), batch 16, 2,000 in-memory batches, SGD with
momentum, one thread. Three groups, each a hand-written loop and the Learner doing the same work:

- fp32: ``raw_onecycle`` (a hand-written loop calling ``torch.optim.lr_scheduler.OneCycleLR.step()`` every
  step, which cycles lr and momentum) against ``learner`` (no callbacks), ``learner_sched`` (a per-step
  ``Scheduler`` on lr and momentum) and ``learner_realistic`` (that Scheduler, ``Metrics`` and a drawing
  ``ProgressBar``, forced on and writing to a null stream, so its cost is counted);
- bf16: ``raw_onecycle_bf16`` (the same loop under ``torch.autocast(bfloat16)``) against
  ``learner_realistic_bf16`` (the realistic set plus ``MixedPrecision(torch.bfloat16)``);
- accumulation: ``raw_onecycle_accum4`` (loss / 4, a step and ``OneCycleLR.step()`` every 4 batches, keeping the
  sample-weighted loss sum on the device and reading the epoch's mean once, as ``Metrics`` does: like for like)
  against ``learner_realistic_accum4`` (the realistic set plus ``GradientAccumulation(4)``). The model is a
  regression, so there is no accuracy to sum on either side.

``test_interleaved_ratios`` times every case back to back in each round and reports the median over rounds of
each Learner case's ratio to its group's hand-written loop: on a shared machine that cancels the drift between
cases. ``test_calls_per_step`` counts Python calls per step with cProfile (deterministic: tqdm's clock is frozen). Run:

    pytest benchmarks/bench_overhead.py --benchmark-only --benchmark-columns=median,iqr,rounds -s
"""

from __future__ import annotations

import copy
import cProfile
import itertools
import os
import pstats
import statistics
import time
from unittest import mock

import pytest
import torch

from loopkit import Learner, Metrics, ProgressBar
from loopkit.callbacks import GradientAccumulation, MixedPrecision
from loopkit.schedules import onecycle, onecycle_momentum
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum
from loopkit.scheduling.scheduler import Scheduler

N_BATCHES = 2000
ROUNDS = int(os.environ.get("LOOPKIT_BENCH_ROUNDS", "15"))
LR = 0.01


def _problem():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    data = [(torch.randn(16, 32), torch.randn(16, 1)) for _ in range(N_BATCHES)]
    return model, data


def _raw_onecycle(model, data, autocast=False, accumulate=1, sums=False):
    loss_fn = torch.nn.functional.mse_loss

    def run():
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=N_BATCHES // accumulate)
        model.train()
        loss_sum, count = torch.zeros((), dtype=torch.float64), 0
        for i, (xb, yb) in enumerate(data):
            if autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = loss_fn(model(xb), yb)
            else:
                loss = loss_fn(model(xb), yb)
            if sums:  # the epoch's sample-weighted loss sum, on the device, as Metrics keeps it
                loss_sum += loss.detach() * len(xb)
                count += len(xb)
            if accumulate > 1:
                loss = loss / accumulate
            loss.backward()
            if (i + 1) % accumulate == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sched.step()
        if sums:
            return loss_sum.item() / count  # one host read an epoch

    return run


def _learner(model, data, *, scheduler=True, realistic=False, extra=()):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    callbacks = list(extra)
    if scheduler:
        callbacks.append(Scheduler({LearningRate: onecycle(1, LR), Momentum: onecycle_momentum(1)}))
    if realistic:
        null = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the benchmark
        callbacks += [Metrics(), ProgressBar(force=True, file=null)]
    learner = Learner(model, data, optimizer, torch.nn.functional.mse_loss, callbacks=callbacks)
    return lambda: learner.fit(1)


CASES = {
    "raw_onecycle": lambda m, d: _raw_onecycle(m, d),
    "learner": lambda m, d: _learner(m, d, scheduler=False),
    "learner_sched": lambda m, d: _learner(m, d),
    "learner_realistic": lambda m, d: _learner(m, d, realistic=True),
    "raw_onecycle_bf16": lambda m, d: _raw_onecycle(m, d, autocast=True),
    "learner_realistic_bf16": lambda m, d: _learner(m, d, realistic=True, extra=[MixedPrecision(torch.bfloat16)]),
    "raw_onecycle_accum4": lambda m, d: _raw_onecycle(m, d, accumulate=4, sums=True),
    "learner_realistic_accum4": lambda m, d: _learner(m, d, realistic=True, extra=[GradientAccumulation(4)]),
}
BASELINE = {
    "learner": "raw_onecycle",
    "learner_sched": "raw_onecycle",
    "learner_realistic": "raw_onecycle",
    "learner_realistic_bf16": "raw_onecycle_bf16",
    "learner_realistic_accum4": "raw_onecycle_accum4",
}


def _calls_per_step(run) -> float:
    # tqdm redraws on its wall clock (every 0.1 s), so with a drawing bar the count would follow the machine's
    # speed and load. Its clock is frozen here: the bar's per-step bookkeeping and its every-20-steps postfix
    # are counted, its time-driven redraws are not (the interleaved timings include them).
    with mock.patch("tqdm.std.time", itertools.repeat(0.0).__next__):
        profiler = cProfile.Profile()
        profiler.enable()
        run()
        profiler.disable()
    return pstats.Stats(profiler).total_calls / N_BATCHES


def test_calls_per_step(benchmark):
    """Python calls per step (cProfile counts calls into C functions too): deterministic, unlike times."""
    model, data = _problem()
    counts = {}
    for case, make in CASES.items():
        run = make(copy.deepcopy(model), data)
        run()
        counts[case] = _calls_per_step(run)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    for case, base in BASELINE.items():
        benchmark.extra_info[f"{case}_extra_calls_per_step"] = counts[case] - counts[base]
    for case, calls in counts.items():
        benchmark.extra_info[f"{case}_calls_per_step"] = calls
        extra = f", {calls - counts[BASELINE[case]]:+.1f} over {BASELINE[case]}" if case in BASELINE else ""
        print(f"\n{case}: {calls:.1f} calls/step{extra}")


def test_interleaved_ratios(benchmark):
    """Each round times every case back to back; ratios are medians of per-round ratios to the group's loop."""
    model, data = _problem()
    runs = {case: make(copy.deepcopy(model), data) for case, make in CASES.items()}
    for run in runs.values():
        run()  # warm up allocator and autograd caches
    rounds: list[dict[str, float]] = []

    cpu_rounds: list[dict[str, float]] = []

    def one_round():
        times, cpu = {}, {}
        for case, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[case] = time.perf_counter() - start
            cpu[case] = time.process_time() - start_cpu
        rounds.append(times)
        cpu_rounds.append(cpu)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    for case in CASES:
        per_step = statistics.median(r[case] for r in rounds) / N_BATCHES * 1e6
        cpu_per_step = statistics.median(r[case] for r in cpu_rounds) / N_BATCHES * 1e6
        benchmark.extra_info[f"{case}_us_per_step"] = per_step
        print(f"\n{case}: median {per_step:.1f} us/step wall, {cpu_per_step:.1f} us/step CPU")
    for case, base in BASELINE.items():
        cpu_ratio = statistics.median(r[case] / r[base] for r in cpu_rounds)
        benchmark.extra_info[f"{case}_cpu_ratio"] = cpu_ratio
        print(f"\n{case} vs {base}: median per-round CPU-time ratio {cpu_ratio:.3f}")
        ratios = sorted(r[case] / r[base] for r in rounds)
        ratio = statistics.median(ratios)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio, ratio, ratio]
        overhead = statistics.median((r[case] - r[base]) / N_BATCHES * 1e6 for r in rounds)
        benchmark.extra_info[f"{case}_ratio"] = ratio
        benchmark.extra_info[f"{case}_ratio_iqr"] = (quartiles[0], quartiles[2])
        benchmark.extra_info[f"{case}_overhead_us_per_step"] = overhead
        print(
            f"\n{case} vs {base}: median per-round ratio {ratio:.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}), "
            f"overhead {overhead:.1f} us/step"
        )


@pytest.mark.parametrize("case", ["raw_onecycle", "learner_realistic"])
def test_sequential(benchmark, case):
    """One case's rounds in a row (absolute times; drift between cases makes their ratio unreliable)."""
    model, data = _problem()
    run = CASES[case](copy.deepcopy(model), data)
    run()
    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["us_per_step"] = benchmark.stats.stats.median / N_BATCHES * 1e6
