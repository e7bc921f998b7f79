"""Presets against the libraries they come from, step by step, over randomised settings.

References: torch's OneCycleLR, LambdaLR and CosineAnnealingWarmRestarts driving real optimizers, and
fastai's / transformers' / timm's formulas written out here independently. Tolerance 1e-12 relative: the
formulas are the same up to the association of floating-point operations, which moves the last few bits.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from loopkit.schedules import (
    cosine_restarts,
    onecycle,
    onecycle_momentum,
    onecycle_torch,
    onecycle_torch_momentum,
    warmup_cosine,
    warmup_linear,
)

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
    for _ in range(n_steps):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["momentum"] if betas is None else group["betas"][0])
        opt.step()
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
        (lambda: onecycle(0, 0.1), "total=0"),
        (lambda: onecycle(10, -0.1), "peak=-0.1"),
        (lambda: onecycle(10, 0.1, pct_start=1.0), "pct_start=1.0"),
        (lambda: onecycle_torch(1, 0.1), "total_steps=1"),
        (lambda: onecycle_torch(100, 0.1, anneal="cosine"), "unknown annealing 'cosine'"),
        (lambda: warmup_linear(10, 10, 0.1), "num_training_steps=10 must exceed num_warmup_steps=10"),
        (lambda: warmup_linear(-1, 10, 0.1), "num_warmup_steps=-1"),
        (lambda: cosine_restarts(0, 0.1, cycles=2), "period=0"),
        (lambda: cosine_restarts(10, 0.1, cycles=0), "cycles=0"),
    ],
)
def test_preset_arguments_are_validated(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()
