"""Presets against the libraries they come from, step by step, over randomised settings.

References: torch's OneCycleLR, LambdaLR and CosineAnnealingWarmRestarts driving real optimizers, and
fastai's / transformers' / timm's formulas written out here independently. Tolerance 1e-12 relative: the
formulas are the same up to the association of floating-point operations, which moves the last few bits.
"""

from __future__ import annotations

import math
import random
import re

import pytest
import torch

from loopkit import Learner
from loopkit.schedules import (
    cosine_restarts,
    onecycle,
    onecycle_momentum,
    onecycle_torch,
    onecycle_torch_momentum,
    warmup_cosine,
    warmup_linear,
)
from loopkit.scheduling.optimizer_hyperparams import LearningRate
from loopkit.scheduling.scheduler import Scheduler

REL = 1e-12


def torch_run(make_scheduler, n_steps, lr=1.0, momentum=0.9, betas=None):
    """The lr (and momentum) an optimizer holds before each of ``n_steps`` steps under a torch scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    if betas is None:
        opt = torch.optim.SGD([param], lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam([param], lr=lr, betas=betas)
    scheduler = make_scheduler(opt)
    lrs, moms = [], []
    for k in range(n_steps):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["momentum"] if betas is None else group["betas"][0])
        opt.step()
        if k < n_steps - 1:  # the scheduler's step after the last optimizer step sets a value nobody uses
            scheduler.step()
    return lrs, moms


def close(ours, reference, scale=0.0):
    """Equal to 1e-12 relative, or within a few ulps of ``scale``, the largest operand of the formula.

    Interpolating from a large value to a tiny one (max_lr -> max_lr/1e9) computes ``start + (end - start) * p``,
    whose rounding error is about one ulp of ``start`` (2e-16 * scale), however small the result.
    """
    assert len(ours) == len(reference)
    for k, (a, b) in enumerate(zip(ours, reference)):
        assert a == pytest.approx(b, rel=REL, abs=4e-16 * scale), f"step {k}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------------------------- torch OneCycleLR
def test_onecycle_torch_issue_numbers():
    b = onecycle_torch(100, 1.0).bind()
    assert b(0) == pytest.approx(0.04, rel=REL)
    assert b(29) == pytest.approx(1.0, rel=REL)
    assert b(99) == pytest.approx(4e-6, rel=REL)


SETTINGS = random.Random(20261122)
ONECYCLE_CASES = [
    dict(
        total_steps=SETTINGS.randint(20, 400),
        pct_start=SETTINGS.uniform(0.1, 0.45),
        div_factor=SETTINGS.uniform(2, 50),
        final_div_factor=SETTINGS.choice([10.0, 1e3, 1e4, 1e5]),
        anneal=SETTINGS.choice(["cos", "linear"]),
        three_phase=SETTINGS.random() < 0.4,
        max_lr=SETTINGS.uniform(1e-3, 3.0),
    )
    for _ in range(24)
]


@pytest.mark.parametrize(
    "case", ONECYCLE_CASES, ids=lambda c: f"{c['total_steps']}-{c['anneal']}-3p{int(c['three_phase'])}"
)
def test_onecycle_torch_matches_onecyclelr_with_momentum(case):
    n = case["total_steps"]
    lrs, moms = torch_run(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=case["max_lr"],
            total_steps=n,
            pct_start=case["pct_start"],
            anneal_strategy=case["anneal"],
            div_factor=case["div_factor"],
            final_div_factor=case["final_div_factor"],
            three_phase=case["three_phase"],
            base_momentum=0.8,
            max_momentum=0.93,
        ),
        n,
    )
    lr = onecycle_torch(
        n,
        case["max_lr"],
        pct_start=case["pct_start"],
        div_factor=case["div_factor"],
        final_div_factor=case["final_div_factor"],
        anneal=case["anneal"],
        three_phase=case["three_phase"],
    )
    mom = onecycle_torch_momentum(
        n,
        base_momentum=0.8,
        max_momentum=0.93,
        pct_start=case["pct_start"],
        anneal=case["anneal"],
        three_phase=case["three_phase"],
    )
    close(lr.values(n).tolist(), lrs, scale=case["max_lr"])
    close(mom.values(n).tolist(), moms, scale=1.0)
    bound = lr.bind()
    close([bound(k) for k in range(n)], lrs, scale=case["max_lr"])  # the scalar path too
    # The last step is the final value exactly (torch's own arithmetic is only within an ulp of max_lr there).
    assert bound(n - 1) == case["max_lr"] / case["div_factor"] / case["final_div_factor"]


def test_onecycle_torch_momentum_is_adams_beta1():
    n = 50
    _, betas = torch_run(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=n), n, betas=(0.9, 0.99)
    )
    close(onecycle_torch_momentum(n).values(n).tolist(), betas)


# ----------------------------------------------------------------------------------------------- degenerate sizes
def test_onecycle_torch_on_three_and_two_steps_gives_torchs_numbers():
    # torch's warmup would end at step 0.3 * 3 - 1 = -0.1: the cycle starts on its way down from max_lr.
    assert onecycle_torch(3, 1.0).values(3).tolist() == pytest.approx([0.99442, 0.46264, 4e-06], rel=2e-5)
    assert onecycle_torch(2, 1.0).values(2).tolist() == pytest.approx([0.81175, 4e-06], rel=2e-5)
    # the same to 1e-12 against torch itself
    for n in (1, 2, 3):
        lrs, _ = torch_run(lambda opt, n=n: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=n), n)
        close(onecycle_torch(n, 1.0).values(n).tolist(), lrs, scale=1.0)


def test_onecycle_torch_refuses_where_torch_divides_by_zero_naming_the_arguments():
    with pytest.raises(ZeroDivisionError):  # the reference fails at construction (step 0)
        p = torch.nn.Parameter(torch.zeros(1))
        torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([p], lr=1.0), max_lr=1.0, total_steps=2, pct_start=0.5)
    for call in (onecycle_torch, lambda n, lr, **kw: onecycle_torch_momentum(n, **kw)):
        with pytest.raises(ValueError, match=r"total_steps=2, pct_start=0\.5\).*divides by zero"):
            call(2, 1.0, pct_start=0.5)
        with pytest.raises(ValueError, match=r"total_steps=10, pct_start=0\.1\)"):
            call(10, 1.0, pct_start=0.1, three_phase=True)


def onecycle_reference(n, pct, three_phase, anneal):
    """torch's OneCycleLR (lr and momentum) for n steps, or None where torch divides by zero."""
    try:
        return torch_run(
            lambda opt: torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=2.0,
                total_steps=n,
                pct_start=pct,
                three_phase=three_phase,
                anneal_strategy=anneal,
                base_momentum=0.8,
                max_momentum=0.93,
            ),
            n,
        )
    except ZeroDivisionError:
        return None


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_onecycle_torch_sweep_of_small_sizes_and_edge_pcts_matches_torch_or_refuses_where_it_fails(three_phase, anneal):
    compared = refused = 0
    for n in range(1, 9):
        for pct in (0.0, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.6, 0.9, 1.0):
            reference = onecycle_reference(n, pct, three_phase, anneal)
            kw = dict(pct_start=pct, three_phase=three_phase, anneal=anneal)
            if reference is None:
                with pytest.raises(ValueError, match="divides by zero"):
                    onecycle_torch(n, 2.0, **kw)
                refused += 1
                continue
            lr = onecycle_torch(n, 2.0, **kw)
            mom = onecycle_torch_momentum(n, base_momentum=0.8, max_momentum=0.93, **kw)
            close(lr.values(n).tolist(), reference[0], scale=2.0)
            close(mom.values(n).tolist(), reference[1], scale=1.0)
            assert [lr.bind()(k) for k in range(n)] == pytest.approx(reference[0], rel=REL, abs=1e-15)
            compared += 1
    assert compared > 50 and refused >= 4  # both branches exercised


def test_onecycle_torch_ends_within_the_fit_so_the_scheduler_takes_it_at_every_size():
    for n in (1, 2, 3, 5):
        model = torch.nn.Linear(1, 1)
        sched = Scheduler({LearningRate: onecycle_torch(n, 1.0)})
        data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * n
        Learner(
            model, data, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.functional.mse_loss, callbacks=[sched]
        ).fit(1)
        lrs, _ = torch_run(lambda opt, n=n: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=n), n)
        close(sched.history["lr"], lrs, scale=1.0)


# ----------------------------------------------------------------------------------------------- fastai
def fastai_sched_cos(start, end, pos):
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def fastai_combined_cos(pct, v0, v1, v2, pos):
    """fastai's combine_scheds([pct, 1-pct], [cos(v0, v1), cos(v1, v2)]) evaluated at pos in [0, 1)."""
    if pos < pct:
        return fastai_sched_cos(v0, v1, pos / pct)
    return fastai_sched_cos(v1, v2, (pos - pct) / (1 - pct))


def test_onecycle_matches_fastai_issue_numbers():
    values = onecycle(1, 1.0).values(100, steps_per_epoch=100)
    assert values[1] == pytest.approx(0.0437849434, rel=1e-9)  # the issue's figures carry 10 digits
    assert values[99] == pytest.approx(0.0004485806, rel=1e-7)


@pytest.mark.parametrize(
    "n_epochs, n_batches, peak, pct, div, div_final",
    [
        (1, 100, 1.0, 0.25, 25.0, 1e5),
        (5, 37, 3e-3, 0.3, 10.0, 1e4),
        (10, 12, 0.1, 0.25, 25.0, 1e5),
        (3, 1, 0.5, 0.5, 5.0, 100.0),
    ],
)
def test_onecycle_matches_fastai_fit_one_cycle(n_epochs, n_batches, peak, pct, div, div_final):
    n = n_epochs * n_batches
    ours = onecycle(n_epochs, peak, pct_start=pct, div=div, div_final=div_final).values(n, steps_per_epoch=n_batches)
    ref = [fastai_combined_cos(pct, peak / div, peak, peak / div_final, k / n) for k in range(n)]
    close(ours.tolist(), ref)
    moms = onecycle_momentum(n_epochs, pct_start=pct).values(n, steps_per_epoch=n_batches)
    close(moms.tolist(), [fastai_combined_cos(pct, 0.95, 0.85, 0.95, k / n) for k in range(n)])


def fastai_combine_scheds(pcts, scheds):
    """fastai's combine_scheds: cumulative pcts, the last phase whose start pos has reached (so a phase of
    length 0 is skipped), position within it; pos 1 is the last phase's end."""
    starts = [0.0]
    for p in pcts:
        starts.append(starts[-1] + p)

    def inner(pos):
        if pos >= 1:
            return scheds[-1](1.0)
        idx = min(max(i for i, s in enumerate(starts) if pos >= s), len(starts) - 2)
        return scheds[idx]((pos - starts[idx]) / (starts[idx + 1] - starts[idx]))

    return inner


@pytest.mark.parametrize("pct", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("n_epochs, n_batches", [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)])
def test_onecycle_edges_match_fastai_combine_scheds(pct, n_epochs, n_batches):
    n = n_epochs * n_batches
    peak, div, div_final = 1.0, 25.0, 1e5
    lr_ref = fastai_combine_scheds(
        [pct, 1 - pct],
        [lambda p: fastai_sched_cos(peak / div, peak, p), lambda p: fastai_sched_cos(peak, peak / div_final, p)],
    )
    mom_ref = fastai_combine_scheds(
        [pct, 1 - pct], [lambda p: fastai_sched_cos(0.95, 0.85, p), lambda p: fastai_sched_cos(0.85, 0.95, p)]
    )
    ours = onecycle(n_epochs, peak, pct_start=pct, div=div, div_final=div_final).values(n, steps_per_epoch=n_batches)
    close(ours.tolist(), [lr_ref(k / n) for k in range(n)], scale=peak)
    moms = onecycle_momentum(n_epochs, pct_start=pct).values(n, steps_per_epoch=n_batches)
    close(moms.tolist(), [mom_ref(k / n) for k in range(n)], scale=1.0)


def test_onecycle_pct_start_zero_is_a_cosine_decay_from_the_peak_and_one_a_warmup_only():
    decay = onecycle(4, 1.0, pct_start=0.0).values(4, steps_per_epoch=1)
    assert decay[0] == 1.0 and decay[2] == pytest.approx((1.0 + 1e-5) / 2, rel=1e-15)
    warm = onecycle(4, 1.0, pct_start=1.0).values(4, steps_per_epoch=1)
    assert warm[0] == 0.04 and warm[2] == pytest.approx((0.04 + 1.0) / 2, rel=1e-15)


# ----------------------------------------------------------------------------------------------- transformers
def transformers_linear(W, T):
    def lr_lambda(step):
        if step < W:
            return float(step) / float(max(1, W))
        return max(0.0, float(T - step) / float(max(1, T - W)))

    return lr_lambda


def transformers_cosine(W, T, min_lr_rate=0.0):
    def lr_lambda(step):
        if step < W:
            return float(step) / float(max(1, W))
        progress = float(step - W) / float(max(1, T - W))
        factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return max(0.0, factor * (1.0 - min_lr_rate) + min_lr_rate)

    return lr_lambda


@pytest.mark.parametrize("W, T, peak", [(0, 50, 0.1), (10, 100, 3e-4), (1, 7, 1.0), (33, 34, 2e-5)])
def test_warmup_linear_matches_get_linear_schedule_with_warmup(W, T, peak):
    n = T + 5  # past the end both stay at 0
    lrs, _ = torch_run(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, transformers_linear(W, T)), n, lr=peak)
    close(warmup_linear(W, T, peak).values(n).tolist(), lrs)


@pytest.mark.parametrize("W, T", [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (3, 3), (2, 3)])
def test_warmups_at_the_smallest_sizes_match_transformers_within_the_fit(W, T):
    # warmup equal to the total: transformers warms up over the whole fit and is 0 at num_training_steps
    lin, _ = torch_run(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, transformers_linear(W, T)), T + 3, lr=0.5)
    close(warmup_linear(W, T, 0.5).values(T + 3).tolist(), lin)
    cos, _ = torch_run(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, transformers_cosine(W, T, 0.2)), T, lr=0.5)
    close(warmup_cosine(W, T, 0.5, floor=0.1).values(T).tolist(), cos)
    # after the fit loopkit's cosine holds the floor (transformers' climbs again, or jumps to the peak when W == T)
    assert warmup_cosine(W, T, 0.5, floor=0.1).values(T + 3).tolist()[T:] == [0.1] * 3


def optax_warmup_cosine_decay(init_value, peak_value, warmup_steps, decay_steps, end_value):
    """optax.warmup_cosine_decay_schedule written out: linear init -> peak, then cosine peak -> end."""

    def schedule(step):
        if step < warmup_steps:
            return init_value + (peak_value - init_value) * step / warmup_steps
        count = min(step - warmup_steps, decay_steps - warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * count / (decay_steps - warmup_steps)))
        return (peak_value - end_value) * cosine + end_value

    return schedule


@pytest.mark.parametrize("W, T", [(1, 2), (5, 20), (10, 11)])
def test_warmup_presets_start_from_a_nonzero_value(W, T):
    ref = optax_warmup_cosine_decay(0.01, 0.3, W, T, 0.002)
    ours = warmup_cosine(W, T, 0.3, floor=0.002, warmup_start=0.01).values(T + 2)
    close(ours.tolist(), [ref(k) for k in range(T + 2)], scale=0.3)
    linear = warmup_linear(W, T, 0.3, warmup_start=0.01).values(T + 1)
    expected = [0.01 + (0.3 - 0.01) * k / W if k < W else 0.3 * (T - k) / (T - W) for k in range(T + 1)]
    close(linear.tolist(), expected, scale=0.3)


@pytest.mark.parametrize("W, T, peak, floor", [(10, 100, 1e-3, 0.0), (0, 40, 0.5, 0.05), (5, 6, 1.0, 0.1)])
def test_warmup_cosine_matches_transformers_up_to_the_end(W, T, peak, floor):
    # transformers' cosine climbs again after num_training_steps; loopkit holds the floor (documented).
    lrs, _ = torch_run(
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, transformers_cosine(W, T, floor / peak)), T + 1, lr=peak
    )
    close(warmup_cosine(W, T, peak, floor=floor).values(T + 1).tolist(), lrs)


def test_per_epoch_warmup_is_the_same_formula_on_the_epoch_clock():
    s = warmup_linear(2, 10, 1.0, unit="epoch")
    ref = transformers_linear(2, 10)
    b = s.bind(steps_per_epoch=50, n_epochs=10)
    close([b(float(e)) for e in range(12)], [ref(e) for e in range(12)])


# ----------------------------------------------------------------------------------------------- restarts
@pytest.mark.parametrize("T0, mult, eta_min, base", [(10, 1, 0.0, 0.1), (5, 2, 1e-4, 1.0), (7, 3, 0.01, 0.5)])
def test_cosine_restarts_matches_cosine_annealing_warm_restarts(T0, mult, eta_min, base):
    cycles = 4
    n = sum(T0 * mult**i for i in range(cycles))
    lrs, _ = torch_run(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=T0, T_mult=mult, eta_min=eta_min),
        n,
        lr=base,
    )
    ours = cosine_restarts(T0, base, cycles=cycles, floor=eta_min, period_mult=mult).values(n)
    close(ours.tolist(), lrs)


@pytest.mark.parametrize("T0, mult, cycles", [(1, 1, 1), (1, 1, 4), (1, 2, 3), (2, 1, 1), (3, 3, 2)])
def test_cosine_restarts_smallest_periods_and_cycles_match_torch(T0, mult, cycles):
    n = sum(T0 * mult**i for i in range(cycles))
    lrs, _ = torch_run(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=T0, T_mult=mult, eta_min=0.01),
        n,
        lr=0.4,
    )
    close(cosine_restarts(T0, 0.4, cycles=cycles, floor=0.01, period_mult=mult).values(n).tolist(), lrs, scale=0.4)


def fit_lrs(schedule, n_steps, n_epochs=1, **scheduler_kw):
    model = torch.nn.Linear(1, 1)
    sched = Scheduler({LearningRate: schedule}, **scheduler_kw)
    data = [(torch.zeros(1, 1), torch.zeros(1, 1))] * (n_steps // n_epochs)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched]).fit(n_epochs)
    return sched.history["lr"]


def test_cosine_restarts_ending_mid_cycle_with_the_fit_needs_no_policy_flag():
    # cycles of 10, 20 and 40 steps in a 50-step fit: the fit ends 20 steps into the third cycle, as torch's does
    lrs, _ = torch_run(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2, eta_min=0.0), 50, lr=0.1
    )
    schedule = cosine_restarts(10, 0.1, cycles=3, period_mult=2)
    close(fit_lrs(schedule, 50, n_epochs=5), lrs, scale=0.1)
    assert lrs[30] == 0.1 and lrs[49] > 0.05  # the third cycle began at step 30 and is cut mid-way
    # a fit that ends before the last cycle begins is still a mismatch: fewer cycles than asked for
    with pytest.raises(ValueError, match="ends at 70"):
        fit_lrs(schedule, 25)
    # with a warmup prefix the last cycle starts later by the warmup
    warm = cosine_restarts(10, 0.1, cycles=3, period_mult=2, warmup=5)
    assert len(fit_lrs(warm, 40)) == 40
    with pytest.raises(ValueError, match="ends at 75"):
        fit_lrs(warm, 34)


def timm_style(t, *, period, peak, floor, mult, decay, warmup, warmup_start):
    """timm's CosineLRScheduler with warmup_prefix=True and cycle_decay, written from its documented formula."""
    if t < warmup:
        return warmup_start + t * (peak - warmup_start) / warmup
    t -= warmup
    i, start, length = 0, 0.0, period
    while t >= start + length:
        start += length
        i += 1
        length = period * mult**i
    lr_max = peak * decay**i
    return floor + 0.5 * (lr_max - floor) * (1 + math.cos(math.pi * (t - start) / length))


@pytest.mark.parametrize("mult, decay, warmup", [(1.0, 0.5, 5), (2.0, 0.8, 3), (1.0, 1.0, 0)])
def test_cosine_restarts_with_warmup_and_cycle_decay_matches_the_timm_formula(mult, decay, warmup):
    kw = dict(period=8, peak=0.2, floor=0.01, mult=mult, decay=decay, warmup=warmup, warmup_start=0.001)
    cycles = 3
    n = warmup + int(sum(8 * mult**i for i in range(cycles)))
    s = cosine_restarts(
        8, 0.2, cycles=cycles, floor=0.01, period_mult=mult, decay=decay, warmup=warmup, warmup_start=0.001
    )
    close(s.values(n).tolist(), [timm_style(t, **kw) for t in range(n)])


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: onecycle(0, 0.1), "onecycle(total=0): total must be > 0"),
        (lambda: onecycle(10, -0.1), "onecycle(peak=-0.1): peak must be > 0"),
        (lambda: onecycle(10, 0.1, pct_start=1.5), "onecycle(pct_start=1.5): pct_start must be >= 0 and <= 1"),
        (lambda: onecycle_torch(0, 0.1), "onecycle_torch(total_steps=0): total_steps must be a whole number"),
        (lambda: onecycle_torch(100, 0.1, anneal="cosine"), "onecycle_torch(anneal='cosine'): unknown annealing"),
        (lambda: onecycle_torch(100, 0.1, pct_start=-0.1), "onecycle_torch(pct_start=-0.1)"),
        (
            lambda: warmup_linear(11, 10, 0.1),
            "warmup_linear(num_warmup_steps=11, num_training_steps=10): the warmup would outlast training",
        ),
        (lambda: warmup_linear(-1, 10, 0.1), "warmup_linear(num_warmup_steps=-1)"),
        (lambda: warmup_cosine(0, 0, 0.1), "warmup_cosine(num_training_steps=0)"),
        (lambda: cosine_restarts(0, 0.1, cycles=2), "cosine_restarts(period=0): period must be > 0"),
        (lambda: cosine_restarts(10, 0.1, cycles=0), "cosine_restarts(cycles=0)"),
    ],
)
def test_preset_arguments_are_validated(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
