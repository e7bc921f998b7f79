"""Fused optimizers against torch.optim over 100 steps with moving hyperparameters.

Each parity test runs three ways (the ``device`` fixture): the reference path on the CPU; the CUDA kernel
sources compiled for the host and driven through the optimizers' real launch path (``cuda_on_host.py``, needs
g++), which checks the kernels' arithmetic, chunking, vector and scalar paths without a GPU; and the kernels on a
GPU (skipped without CUDA).

fp32 tolerance 1e-6 relative (the issue's bar): the reference path repeats torch's operations; the kernels
differ by float32 rounding of the bias corrections (powf) and fused arithmetic.
"""

from __future__ import annotations

import copy
import ctypes
import math
import pathlib
import re
import warnings

import pytest
import torch

import loopkit.optim._base as base
from loopkit import Learner, Scheduler, onecycle
from loopkit.optim import FusedAdamW, FusedSGD, _cuda
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum, WeightDecay

from . import cuda_on_host

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HOST_KERNELS = pytest.mark.skipif(cuda_on_host.compiler() is None, reason="needs g++ to run the kernels on the host")
STEPS = 100
real_launch = _cuda.launch


@pytest.fixture(
    params=["reference", pytest.param("kernels-on-host", marks=HOST_KERNELS), pytest.param("cuda", marks=CUDA)]
)
def device(request, monkeypatch):
    """Where the parameters live ("cpu" or "cuda"); with kernels-on-host the CPU step runs the CUDA sources."""
    if request.param == "kernels-on-host":
        cuda_on_host.run_kernels_on_host(monkeypatch)
    return "cuda" if request.param == "cuda" else "cpu"


def params(device="cpu", dtype=torch.float32, seed=0):
    """A mixed bag: matrices, a vector, a zero-size tensor, and one that never gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(37, 19), (19,), (0, 4), (5, 3, 2), (130_001,), (7,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(device, dtype)) for s in shapes]


def groups(ps, **extra):
    return [{"params": ps[:3], **extra}, {"params": ps[3:], "lr": 0.02}]


def grads(ps, k, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + k)
    for i, p in enumerate(ps):
        p.grad = None if i == len(ps) - 1 else torch.randn(p.shape, generator=g).to(p.device, p.dtype)


def moving(opt, k, adam):
    """Change every hyperparameter every step, as a schedule would."""
    for gi, group in enumerate(opt.param_groups):
        group["lr"] = 0.01 * (1 + math.sin(k / 7 + gi))
        group["weight_decay"] = 0.01 * (1 + math.cos(k / 5))
        if adam:
            group["betas"] = (0.85 + 0.1 * (k % 10) / 10, 0.99 + 0.009 * (k % 3) / 3)
        else:
            group["momentum"] = 0.8 + 0.15 * (k % 4) / 4


def take_steps(opt, ps, adam, ks):
    """Step k for each k in ks: the schedule's values for k, gradients seeded by k. Deterministic in k alone, so
    two optimizers compared over the same ks may take their steps in either order."""
    for k in ks:
        moving(opt, k, adam)
        grads(ps, k)
        opt.step()


def run(opt_cls, ps, adam, steps=STEPS, **kwargs):
    opt = opt_cls(groups(ps), **kwargs)
    take_steps(opt, ps, adam, range(steps))
    return opt


def assert_close(a, b, rel):
    assert a.shape == b.shape
    if a.numel():
        scale = b.abs().max().item()
        assert torch.allclose(a.float(), b.float(), rtol=rel, atol=rel * scale), (a - b).abs().max()


@pytest.fixture(autouse=True)
def quiet_reference_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def test_adamw_matches_torch_adamw_with_a_moving_schedule(device):
    ours, theirs = params(device), params(device)
    a = run(FusedAdamW, ours, adam=True, eps=1e-8)
    b = run(torch.optim.AdamW, theirs, adam=True, eps=1e-8)
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)
        if q in b.state:
            for key in ("exp_avg", "exp_avg_sq"):
                assert_close(a.state[p][key], b.state[q][key], 1e-6)
            assert a.state[p]["step"].item() == b.state[q]["step"].item() == STEPS
    assert ours[-1] not in a.state  # never had a gradient: untouched, no state


@pytest.mark.parametrize("nesterov, dampening", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_sgd_matches_torch_sgd_with_a_moving_schedule(device, nesterov, dampening):
    ours, theirs = params(device), params(device)
    a = run(FusedSGD, ours, adam=False, momentum=0.9, nesterov=nesterov, dampening=dampening)
    b = run(torch.optim.SGD, theirs, adam=False, momentum=0.9, nesterov=nesterov, dampening=dampening)
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)
        if "momentum_buffer" in b.state.get(q, {}):
            assert_close(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"], 1e-6)


def test_sgd_keeps_no_buffer_until_a_schedule_turns_momentum_on(device):
    # Plain SGD stores no momentum buffer in torch (and moves 12 bytes per parameter instead of 20 in ours);
    # when momentum becomes nonzero the buffer starts as the gradient, in both.
    ours, theirs = params(device), params(device)
    a, b = FusedSGD(groups(ours), lr=0.1, weight_decay=0.01), torch.optim.SGD(groups(theirs), lr=0.1, weight_decay=0.01)
    for k in range(20):
        for opt, ps in ((a, ours), (b, theirs)):
            for group in opt.param_groups:
                group["momentum"] = 0.0 if k < 10 else 0.9
            grads(ps, k)
            opt.step()
        if k == 9:
            assert all("momentum_buffer" not in a.state.get(p, {}) for p in ours)
            assert all("momentum_buffer" not in b.state.get(q, {}) for q in theirs)
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)
        if "momentum_buffer" in b.state.get(q, {}):
            assert_close(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"], 1e-6)
        else:
            assert "momentum_buffer" not in a.state.get(p, {})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_take_one_rounding_of_the_fp32_step(device, dtype):
    # From the same low-precision start, one step of ours equals torch's fp32 step rounded once to dtype:
    # tolerance = one unit in the last place of dtype (2**-8 for bf16, 2**-11 for fp16), relative.
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    for opt_cls, adam, kwargs in ((FusedAdamW, True, {}), (FusedSGD, False, {"momentum": 0.9})):
        low = params(device, dtype)
        high = [torch.nn.Parameter(p.detach().float()) for p in low]
        ours = opt_cls(low, lr=0.05, **kwargs)
        theirs = (torch.optim.AdamW if adam else torch.optim.SGD)(high, lr=0.05, **kwargs)
        for k in range(3):
            grads(low, k)
            for p, q in zip(low, high):
                q.grad = None if p.grad is None else p.grad.float()
                q.data.copy_(p.data.float())  # same start for each step: compare one step at a time
            ours.step()
            theirs.step()
            for p, q in zip(low, high):
                if p.numel():
                    assert torch.allclose(p.float(), q.to(dtype).float(), rtol=ulp, atol=ulp * q.abs().max().item())
        assert all(s["exp_avg" if adam else "momentum_buffer"].dtype == torch.float32 for s in ours.state.values())


def test_state_dicts_move_between_fused_and_torch_optimizers():
    for fused_cls, torch_cls, kwargs in (
        (FusedAdamW, torch.optim.AdamW, {}),
        (FusedSGD, torch.optim.SGD, {"momentum": 0.9}),
    ):
        adam = fused_cls is FusedAdamW
        ps_a, ps_b = params(), params()
        a = run(torch_cls, ps_a, adam, steps=20, **kwargs)
        b = fused_cls(groups(ps_b), **kwargs)
        b.load_state_dict(copy.deepcopy(a.state_dict()))  # torch may share, not copy, loaded tensors
        for p, q in zip(ps_a, ps_b):
            q.data.copy_(p.data)
        take_steps(a, ps_a, adam, range(20, 40))
        take_steps(b, ps_b, adam, range(20, 40))
        for p, q in zip(ps_a, ps_b):
            assert_close(q, p, 1e-6)
        back = torch_cls(groups(params()), **kwargs)
        back.load_state_dict(copy.deepcopy(b.state_dict()))  # and back again
        assert set(back.state_dict()["state"][0]) == set(a.state_dict()["state"][0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_resumed_optimizer_continues_bit_for_bit(device, dtype):
    # Save after 5 steps, load into a fresh optimizer over copies of the parameters, take 5 more steps on both:
    # identical to the last bit. (torch's own load would round a bfloat16 model's float32 moments to bfloat16.)
    for opt_cls, adam, kw in ((FusedAdamW, True, {}), (FusedSGD, False, {"momentum": 0.9})):
        ps = params(device, dtype)
        opt = run(opt_cls, ps, adam, steps=5, **kw)
        twins = [torch.nn.Parameter(p.detach().clone()) for p in ps]
        resumed = opt_cls(groups(twins), **kw)
        resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
        take_steps(opt, ps, adam, range(5, 10))
        take_steps(resumed, twins, adam, range(5, 10))
        for p, q in zip(ps, twins):
            assert torch.equal(p, q)
            for key, value in opt.state.get(p, {}).items():
                assert value.dtype == torch.float32 and torch.equal(value, resumed.state[q][key]), key


def test_scheduled_training_in_a_learner_matches_torch():
    def train(opt_cls, **kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(10)]
        sched = Scheduler(
            {
                LearningRate: onecycle(3, 1e-2),
                WeightDecay: onecycle(3, 0.1),
                Momentum: onecycle(3, 0.95, div=0.95 / 0.85, div_final=1.0),
            }
        )
        Learner(
            model, data, opt_cls(model.parameters(), lr=1e-2, **kw), torch.nn.functional.mse_loss, callbacks=[sched]
        ).fit(3)
        return model

    for fused_cls, torch_cls, kw in (
        (FusedAdamW, torch.optim.AdamW, {}),
        (FusedSGD, torch.optim.SGD, {"momentum": 0.9}),
    ):
        for p, q in zip(train(fused_cls, **kw).parameters(), train(torch_cls, **kw).parameters()):
            assert_close(p.detach(), q.detach(), 1e-6)


def test_the_reference_path_warns_once_per_process(monkeypatch):
    monkeypatch.setattr(base, "_warned_cpu", False)
    ps = params()
    opt = FusedAdamW(ps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            grads(ps, k)
            opt.step()
    assert [str(w.message) for w in caught].count(
        "FusedAdamW: parameters are not on a CUDA device, so the reference implementation runs (correct, not fused)"
    ) == 1


def test_adamw_first_moment_is_torchs_lerp_when_beta1_is_small(device):
    # torch's lerp_(g, w) computes g - (g - m) * (1 - w) for w >= 0.5: with beta1 = 0 (w = 1), m = 1 and g = 1e-8
    # it gives 1e-8 exactly, where m + w * (g - m) rounds to 0.
    ours, theirs = torch.nn.Parameter(torch.zeros(6, device=device)), torch.nn.Parameter(torch.zeros(6))
    a, b = FusedAdamW([ours], lr=1e-3, betas=(0.0, 0.999)), torch.optim.AdamW([theirs], lr=1e-3, betas=(0.0, 0.999))
    for g in (1.0, 1e-8):
        ours.grad, theirs.grad = torch.full((6,), g, device=device), torch.full((6,), g)
        a.step()
        b.step()
    assert torch.equal(b.state[theirs]["exp_avg"], torch.full((6,), 1e-8))
    assert torch.equal(a.state[ours]["exp_avg"].cpu(), b.state[theirs]["exp_avg"])


BETAS = [0.0, 0.2, 0.4999, 0.5, 0.5001, 0.8, 0.9, 0.999]


def test_adamw_matches_torch_over_the_whole_range_of_betas(device):
    # Both betas move over [0, 1) every step, across lerp's switch at weight 0.5 and the bias corrections' extremes
    # (beta = 0: log(beta) = -inf; beta near 1: cancellation); gradients span eight decades so that the first
    # moment often meets a gradient far smaller than itself.
    g = torch.Generator().manual_seed(11)
    shapes = [(33, 5), (1031,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    ours = [torch.nn.Parameter(t.to(device)) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    a, b = FusedAdamW(ours, lr=1e-2), torch.optim.AdamW(theirs, lr=1e-2)
    for k in range(40):
        betas = (BETAS[k % len(BETAS)], BETAS[(3 * k + 1) % len(BETAS)])
        for group in a.param_groups + b.param_groups:
            group["betas"] = betas
        for p, q in zip(ours, theirs):
            q.grad = torch.randn(q.shape, generator=g) * 10.0 ** torch.randint(-8, 1, q.shape, generator=g)
            p.grad = q.grad.to(device)
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert_close(p.cpu(), q, 1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            assert_close(a.state[p][key].cpu(), b.state[q][key], 1e-6)


def test_maximize_matches_torch(device):
    for opt_cls, torch_cls, adam, kw in (
        (FusedAdamW, torch.optim.AdamW, True, {}),
        (FusedSGD, torch.optim.SGD, False, {"momentum": 0.9, "nesterov": True}),
    ):
        ours, theirs = params(device), params(device)
        run(opt_cls, ours, adam, steps=10, maximize=True, **kw)
        run(torch_cls, theirs, adam, steps=10, maximize=True, **kw)
        for p, q in zip(ours, theirs):
            assert_close(p, q, 1e-6)


@pytest.mark.parametrize("torch_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_every_option_of_torchs_optimizer_is_accepted_by_name(torch_cls):
    # A new torch option must be implemented or refused here, not silently absorbed.
    import inspect

    fused_cls = FusedAdamW if torch_cls is torch.optim.AdamW else FusedSGD
    assert set(inspect.signature(torch_cls).parameters) <= set(inspect.signature(fused_cls).parameters)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: FusedAdamW(ps, amsgrad=True), r"does not implement amsgrad \(got amsgrad=True\)"),
        (lambda ps: FusedAdamW(ps, differentiable=True), r"cannot differentiate.*differentiable=True"),
        (lambda ps: FusedSGD(ps, differentiable=True), r"cannot differentiate.*differentiable=True"),
        (lambda ps: FusedAdamW(ps, foreach=True), r"fused optimizer, got foreach=True"),
        (lambda ps: FusedSGD(ps, fused=False), r"fused optimizer, got fused=False"),
        (lambda ps: FusedAdamW(ps, maximize=1), r"invalid maximize=1"),
        (lambda ps: FusedSGD(ps, nesterov="yes", momentum=0.9), r"invalid nesterov='yes'"),
    ],
)
def test_options_torch_accepts_are_implemented_or_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make(params())
    FusedAdamW(params(), foreach=False, fused=True, capturable=True)  # what this optimizer is: accepted
    FusedSGD(params(), foreach=None, fused=None)


def test_a_loaded_state_is_checked_before_anything_changes_and_its_options_are_honoured():
    ps = params()
    for bad in (
        torch.optim.AdamW(groups(params()), amsgrad=True),
        torch.optim.Adam(groups(params()), weight_decay=0.1),
    ):
        opt = FusedAdamW(groups(ps), lr=0.5)
        before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        with pytest.raises(ValueError, match=r"amsgrad|decoupled_weight_decay=False"):
            opt.load_state_dict(bad.state_dict())
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == before
    # maximize comes with torch's state and is honoured; torch's implementation selectors are dropped
    theirs, ours = params(), params()
    b = run(torch.optim.AdamW, theirs, True, steps=3, maximize=True, foreach=True)
    a = FusedAdamW(groups(ours))
    a.load_state_dict(copy.deepcopy(b.state_dict()))
    assert all(g["maximize"] is True and "foreach" not in g for g in a.param_groups)
    for p, q in zip(ours, theirs):
        p.data.copy_(q.data)
    take_steps(a, ours, True, range(3, 6))
    take_steps(b, theirs, True, range(3, 6))
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)


@pytest.mark.parametrize("value", [998, 0, -4, 2**31, 4096.0, True])
def test_chunk_size_must_keep_chunks_aligned(value):
    opt = FusedSGD(params(), lr=0.1)
    with pytest.raises(ValueError, match=f"invalid chunk_size={value!r}: must be a positive multiple of 4"):
        opt.chunk_size = value
    opt.chunk_size = 4096
    assert opt.chunk_size == 4096 and FusedSGD(params(), lr=0.1).chunk_size == 65536


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ps: FusedAdamW(ps, lr=-1e-3), "invalid lr=-0.001"),
        (lambda ps: FusedAdamW(ps, betas=(0.9, 1.0)), r"invalid betas\[1\]=1.0"),
        (lambda ps: FusedAdamW(ps, betas=(-0.1, 0.9)), r"invalid betas\[0\]=-0.1"),
        (lambda ps: FusedAdamW(ps, weight_decay=float("nan")), "invalid weight_decay=nan"),
        (lambda ps: FusedSGD(ps, lr=0.1, momentum=-0.5), "invalid momentum=-0.5"),
        (lambda ps: FusedSGD(ps, lr=0.1, nesterov=True), "Nesterov momentum needs momentum > 0"),
        (lambda ps: FusedSGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1), "complex"),
        (lambda ps: FusedSGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=0.1), "torch.float64"),
    ],
)
def test_bad_input_fails_at_construction(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(params())


def test_sparse_gradients_and_a_scheduled_negative_lr_fail_at_the_step():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = FusedAdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    ps = params()
    opt = FusedSGD(ps, lr=0.1)
    opt.param_groups[0]["lr"] = -0.1
    grads(ps, 0)
    with pytest.raises(ValueError, match=r"invalid lr=-0.1"):
        opt.step()


# ----------------------------------------------------------------------------------------------- GPU only
@CUDA
def test_a_gradscaler_step_never_syncs_the_host_and_matches_torch():
    ours, theirs = params("cuda"), params("cuda")
    a, b = FusedAdamW(groups(ours)), torch.optim.AdamW(groups(theirs), fused=True)
    scalers = [torch.amp.GradScaler("cuda", init_scale=2.0**12, growth_interval=2) for _ in range(2)]
    scaled_steps(a, ours, scalers[0], range(2), {0}, True)  # compile, allocate
    scaled_steps(b, theirs, scalers[1], range(2), {0}, True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        scaled_steps(a, ours, scalers[0], range(2, 10), {3, 4}, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    scaled_steps(b, theirs, scalers[1], range(2, 10), {3, 4}, True)
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-5)
        if q in b.state:
            assert a.state[p]["step"].item() == b.state[q]["step"].item() == 7


@CUDA
def test_the_step_runs_on_the_parameters_device_and_its_current_stream():
    # Gradients written on a side stream, then the step on that stream: ordered after them only if the kernels
    # launch on the current stream of the parameters' device. With two GPUs, parameters on the one not current.
    devices = ["cuda:0"] + (["cuda:1"] if torch.cuda.device_count() > 1 else [])
    for device in devices:
        ours, theirs = params(device), params(device)
        opt, ref = FusedSGD(groups(ours), momentum=0.9), torch.optim.SGD(groups(theirs), momentum=0.9)
        side = torch.cuda.Stream(device)
        with torch.cuda.device(0), torch.cuda.stream(side):
            for k in range(5):
                moving(opt, k, False)
                moving(ref, k, False)
                grads(ours, k)
                grads(theirs, k)
                torch.cuda._sleep(1_000_000)  # a slow stream: a launch elsewhere would overtake the gradients
                opt.step()
                ref.step()
        torch.cuda.synchronize(device)
        for p, q in zip(ours, theirs):
            assert_close(p, q, 1e-6)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_misaligned_views_take_the_scalar_path_on_the_gpu(dtype):
    # A parameter that is a view at element offset 1 is not 16-byte aligned: the scalar path must run it
    # (gpu_session.sh runs this under compute-sanitizer, which reports a misaligned vector access).
    flat = torch.randn(4006, device="cuda").to(dtype)
    ours = [torch.nn.Parameter(flat[1:4002]), torch.nn.Parameter(torch.randn(3, device="cuda").to(dtype))]
    theirs = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    for opt_cls, torch_cls, kw in ((FusedAdamW, torch.optim.AdamW, {}), (FusedSGD, torch.optim.SGD, {"momentum": 0.9})):
        opt, ref = opt_cls(ours, lr=0.01, **kw), torch_cls(theirs, lr=0.01, **kw)
        for _ in range(3):
            for p, q in zip(ours, theirs):
                p.grad = torch.randn(p.shape, device="cuda").to(dtype)
                q.grad = p.grad.float()
                q.data.copy_(p.data.float())
            opt.step()
            ref.step()
            for p, q in zip(ours, theirs):
                assert_close(p.float(), q.detach().to(dtype).float(), 2.0**-8 if dtype == torch.bfloat16 else 1e-6)


@CUDA
def test_a_scheduled_training_step_never_syncs_the_host():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).cuda()
    data = [(torch.randn(32, 64, device="cuda"), torch.randn(32, 1, device="cuda")) for _ in range(6)]
    opt = FusedAdamW(model.parameters(), lr=1e-3)
    sched = Scheduler({LearningRate: onecycle(2, 1e-3), Momentum: onecycle(2, 0.95, div=0.95 / 0.85, div_final=1.0)})
    learner = Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[sched])
    learner.fit(2)  # compile and warm up outside the check (the schedule spans 2 epochs)
    torch.cuda.set_sync_debug_mode("error")
    try:
        learner.fit(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@CUDA
def test_the_step_replays_in_a_cuda_graph_while_the_schedule_moves():
    for opt_cls, torch_cls, adam, kw in (
        (FusedAdamW, torch.optim.AdamW, True, {}),
        (FusedSGD, torch.optim.SGD, False, {"momentum": 0.9}),
    ):
        ps, twin = params("cuda"), params("cuda")
        opt, ref = opt_cls(groups(ps), **kw), torch_cls(groups(twin), **kw)
        grads(ps, 0)
        for p, q in zip(ps, twin):
            q.grad = None if p.grad is None else p.grad.clone()
        # Warm up (compiles, allocates state and tables; the second step clears SGD's new-buffer flags), then
        # capture the launch alone: nothing may be allocated or uploaded while capturing.
        moving(opt, 0, adam)
        moving(ref, 0, adam)
        for _ in range(2):
            opt.step()
            ref.step()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            opt.upload_hyperparameters()
            with torch.cuda.graph(graph, stream=stream):
                opt.launch()  # AdamW's step counts are incremented inside, on the device: captured too
        torch.cuda.current_stream().wait_stream(stream)
        for k in range(1, 20):
            moving(opt, k, adam)
            moving(ref, k, adam)
            opt.upload_hyperparameters()
            graph.replay()
            ref.step()
        torch.cuda.synchronize()
        for p, q in zip(ps, twin):
            assert_close(p, q, 1e-5)


def _ptx(compiler, name, dtype, tmp_path):
    """PTX for Hopper from loopkit's exact compile path (NVRTC), or from nvcc, whichever this machine has."""
    import shutil
    import subprocess

    kind = f"-DPARAM_KIND={_cuda.PARAM_KINDS[dtype]}"
    if compiler == "nvrtc":
        lib = _cuda.nvrtc_library()
        if lib is None:
            pytest.skip("no NVRTC library on this machine")
        cubin = _cuda.nvrtc_compile(lib, _cuda.source(name), "90", [kind])  # what loopkit loads
        assert cubin[:4] == b"\x7fELF"
        return _cuda.nvrtc_compile(lib, _cuda.source(name), "90", [kind], output="ptx").decode().rstrip("\0")
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on this machine")
    source = tmp_path / f"{name}.cu"
    source.write_text(_cuda.source(name))
    subprocess.run(
        ["nvcc", "-ptx", "-arch=compute_90", "-std=c++17", kind, str(source), "-o", str(tmp_path / "k.ptx")],
        check=True,
        capture_output=True,
    )
    return (tmp_path / "k.ptx").read_text()


@pytest.mark.parametrize("compiler", ["nvrtc", "nvcc"])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_sources_compile_for_hopper_to_vector_accesses(compiler, name, dtype, tmp_path):
    """Runs wherever a CUDA compiler exists, GPU or not. Bandwidth needs whole 16-byte (state) and 16- or
    8-byte (parameter) global accesses, gradients through the read-only path."""
    ptx = _ptx(compiler, name, dtype, tmp_path)
    assert f".entry {name}_step(" in ptx
    param = "v4.f32" if dtype == torch.float32 else "v2.u32"
    for instruction in (
        f"ld.global.{param}",
        f"ld.global.nc.{param}",
        f"st.global.{param}",
        "ld.global.v4.f32",
        "st.global.v4.f32",
    ):
        assert instruction in ptx, instruction


# ------------------------------------------------------------------------------- kernels, run on the host
@HOST_KERNELS
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1000, 1028])
@pytest.mark.parametrize("offset", [0, 1])
def test_kernels_take_the_vector_path_when_aligned_and_agree_when_not(monkeypatch, dtype, chunk_size, offset):
    # Chunks (a multiple of 4 elements, chunk_size's rule) start 16-byte aligned; a view at element offset 1
    # misaligns the parameter itself. Every case must agree with torch; aligned data must use vector accesses.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(4006, generator=g).to(dtype)
    ours = [torch.nn.Parameter(flat[offset : offset + 4001]), torch.nn.Parameter(torch.randn(3, generator=g).to(dtype))]
    theirs = [torch.nn.Parameter(p.detach().float().clone()) for p in ours]
    for opt_cls, torch_cls, kw in ((FusedAdamW, torch.optim.AdamW, {}), (FusedSGD, torch.optim.SGD, {"momentum": 0.9})):
        opt, ref = opt_cls(ours, lr=0.01, **kw), torch_cls(theirs, lr=0.01, **kw)
        opt.chunk_size = chunk_size
        kernel = cuda_on_host.host_kernel(opt.kernel_name, dtype)
        before = kernel.vector_accesses()
        for k in range(5):
            grads(ours, k, seed=7)
            ours[-1].grad = torch.ones_like(ours[-1])  # grads() leaves the last parameter without one
            for p, q in zip(ours, theirs):
                q.grad = p.grad.float()
                q.data.copy_(p.data.float())  # same start each step: one rounding to dtype per step
            opt.step()
            ref.step()
            ulp = 2.0**-8 if dtype == torch.bfloat16 else 1e-6
            for p, q in zip(ours, theirs):
                assert_close(p.float(), q.detach().to(dtype).float(), ulp)
        used_vectors = kernel.vector_accesses() - before
        if offset == 1:
            # the big tensor takes the scalar path; the 3-element one is all tail
            assert used_vectors == 0
        else:
            assert used_vectors > 0


@HOST_KERNELS
@pytest.mark.parametrize("variant", ["shuffled-threads", "fma-contracted"])
def test_the_kernels_give_torchs_result_in_any_thread_order_and_with_fma_contraction(monkeypatch, variant):
    # The GPU runs blocks and threads in no fixed order and contracts a * b + c into FMAs (nvcc and NVRTC do by
    # default): the host emulation runs them shuffled, or built with -ffp-contract=fast on FMA instructions.
    # Shuffled must be bit-identical to in order (the threads share nothing); contracted within the tolerance.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    if variant == "fma-contracted":
        if "fma" not in pathlib.Path("/proc/cpuinfo").read_text(errors="ignore"):
            pytest.skip("this CPU has no FMA instructions")
        monkeypatch.setattr(cuda_on_host, "EXTRA_FLAGS", ("-mfma", "-ffp-contract=fast"))
    for opt_cls, torch_cls, adam, kw in (
        (FusedAdamW, torch.optim.AdamW, True, {}),
        (FusedSGD, torch.optim.SGD, False, {"momentum": 0.9, "dampening": 0.1}),
    ):
        in_order, varied, theirs = params(), params(), params()
        for ps, seed in ((in_order, 0), (varied, 20261130 if variant == "shuffled-threads" else 0)):
            opt = opt_cls(groups(ps), **kw)
            opt.chunk_size = 4096  # more blocks to shuffle
            with monkeypatch.context() as m:
                m.setattr(cuda_on_host, "ORDER_SEED", seed)
                take_steps(opt, ps, adam, range(6))
        run(torch_cls, theirs, adam, steps=6, **kw)
        for p, q, r in zip(varied, in_order, theirs):
            assert_close(p, r, 1e-6)
            if variant == "shuffled-threads":
                assert torch.equal(p, q)


@HOST_KERNELS
def test_steady_steps_reuse_the_tables_and_refresh_the_hyperparameters_in_place(monkeypatch):
    # What a captured CUDA graph relies on: after the first step, a step with gradients at the same addresses
    # builds no table and writes the new hyperparameters into the same device table the kernels read.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    ours, theirs = params(), params()
    opt, ref = FusedAdamW(groups(ours)), torch.optim.AdamW(groups(theirs))
    grads(ours, 0)
    opt.step()
    cpu = torch.device("cpu")
    hyper, tables = opt._hyper[cpu].data_ptr(), dict(opt._cache)
    for p in ours:
        if p.grad is not None:
            p.grad.mul_(-0.5)  # new values, same storage, as with zero_grad(set_to_none=False) and backward
    for k in range(1, 4):
        moving(opt, k, adam=True)
        opt.step()
        assert opt._hyper[cpu].data_ptr() == hyper
        assert all(opt._cache[slot][1] is tables[slot][1] for slot in tables)
        lr, (_, beta2) = opt.param_groups[1]["lr"], opt.param_groups[1]["betas"]
        assert opt._hyper[cpu][1, 0].item() == pytest.approx(lr, rel=1e-7)  # float32 of the python value
        assert opt._hyper[cpu][1, 4].item() == pytest.approx(1 - beta2, rel=1e-7)
    # and the same four steps through torch, for the values
    grads(theirs, 0)
    ref.step()
    for q in theirs:
        if q.grad is not None:
            q.grad.mul_(-0.5)
    for k in range(1, 4):
        moving(ref, k, adam=True)
        ref.step()
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)


@HOST_KERNELS
@pytest.mark.parametrize("ilp", [1, 3, 4])
def test_the_tuning_knobs_reach_the_kernel_and_keep_it_exact(monkeypatch, ilp):
    # The benchmark sweep sets chunk_size and -DILP on an instance; any setting must give torch's result.
    # (ILP 2, the default, runs in every other test; 3 leaves a partial group at most chunk ends.)
    cuda_on_host.run_kernels_on_host(monkeypatch)
    compiled = []
    monkeypatch.setattr(_cuda, "compiled", lambda *args: compiled.append(args) or cuda_on_host.host_kernel(*args))
    ours, theirs = params(), params()
    opt = FusedAdamW(groups(ours))
    opt.chunk_size, opt.kernel_options = 4096, (f"-DILP={ilp}",)
    ref = torch.optim.AdamW(groups(theirs))
    take_steps(opt, ours, True, range(10))
    take_steps(ref, theirs, True, range(10))
    assert compiled[0][3] == (f"-DILP={ilp}",)
    assert opt._cache[torch.device("cpu"), torch.float32][1].chunk_size == 4096
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)


@HOST_KERNELS
def test_the_kernels_accept_channels_last_and_refuse_layouts_they_would_misread(monkeypatch):
    cuda_on_host.run_kernels_on_host(monkeypatch)
    g = torch.Generator().manual_seed(5)
    conv = torch.randn(8, 3, 5, 5, generator=g).to(memory_format=torch.channels_last)
    ours, theirs = torch.nn.Parameter(conv.clone()), torch.nn.Parameter(conv.clone())
    opt, ref = FusedAdamW([ours], lr=0.01), torch.optim.AdamW([theirs], lr=0.01)
    for _k in range(3):
        grad = torch.randn(conv.shape, generator=g).to(memory_format=torch.channels_last)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    assert_close(ours, theirs, 1e-6)

    strided = torch.nn.Parameter(torch.randn(4, 8)[:, ::2])
    with pytest.raises(RuntimeError, match=r"needs dense parameters; one of shape \(4, 4\) has strides \(8, 2\)"):
        strided.grad = torch.ones(4, 4)
        FusedSGD([strided], lr=0.1).step()
    square = torch.nn.Parameter(torch.randn(3, 5))
    square.grad = torch.randn(5, 3).t()  # right shape, transposed layout
    with pytest.raises(RuntimeError, match=r"strides \(1, 3\) for a parameter of shape \(3, 5\) and strides \(5, 1\)"):
        FusedSGD([square], lr=0.1).step()
    square.grad = torch.randn(3, 5)
    opt = FusedAdamW([square])
    opt.step()
    opt.state[square]["exp_avg"] = opt.state[square]["exp_avg"].double()
    square.grad = torch.randn(3, 5)  # a new address: the tables are rebuilt, and checked
    with pytest.raises(RuntimeError, match=r"optimizer state must be float32, found torch.float64"):
        opt.step()


@HOST_KERNELS
def test_a_scheduled_kernel_step_reads_nothing_back_to_the_host(monkeypatch):
    # The CPU stand-in for set_sync_debug_mode("error"): after warm-up, a scheduled training run through the
    # kernel path must not turn any tensor into a python value (each would be a device sync on a GPU).
    cuda_on_host.run_kernels_on_host(monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    data = [(torch.randn(32, 64), torch.randn(32, 1)) for _ in range(6)]
    sched = Scheduler({LearningRate: onecycle(2, 1e-3), Momentum: onecycle(2, 0.95, div=0.95 / 0.85, div_final=1.0)})
    learner = Learner(
        model, data, FusedAdamW(model.parameters(), lr=1e-3), torch.nn.functional.mse_loss, callbacks=[sched]
    )
    learner.fit(2)
    before = [p.detach().clone() for p in model.parameters()]

    def read_back(name):
        def refuse(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} during a step: a host-device sync on a GPU")

        return refuse

    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, read_back(name))
    learner.fit(2)
    monkeypatch.undo()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it did train


@HOST_KERNELS
@pytest.mark.parametrize("opt_cls, kw", [(FusedAdamW, {}), (FusedSGD, {"momentum": 0.9})])
def test_after_two_warm_up_steps_a_launch_builds_and_uploads_nothing(monkeypatch, opt_cls, kw):
    # The condition for capturing launch() in a CUDA graph (docs/optim.md): no table built, nothing copied from
    # the host, while capturing.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    ps = params()
    opt = opt_cls(groups(ps), **kw)
    grads(ps, 0)
    opt.step()
    opt.step()

    def refuse(*args, **kwargs):
        raise AssertionError("a device table was built during launch()")

    monkeypatch.setattr(_cuda, "device_table", refuse)
    monkeypatch.setattr(_cuda, "tables", refuse)
    for _ in range(3):
        opt.launch()


# ------------------------------------------------------------------- mixed precision: GradScaler, on the device
def scaled_steps(opt, ps, scaler, ks, skip, adam):
    """Step k for each k in ks under a GradScaler, as a training loop does: gradients scaled by the current scale,
    an inf in the first gradient on the steps in ``skip``, a schedule that moves every step."""
    for k in ks:
        moving(opt, k, adam)
        grads(ps, k)
        for p in ps:
            if p.grad is not None:
                p.grad.copy_(scaler.scale(p.grad))  # as backward of scaler.scale(loss) would give
        if k in skip:
            ps[0].grad.view(-1)[0] = float("inf")
        scaler.step(opt)
        scaler.update()


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_gradscaler_steps_unscale_and_skip_on_the_device_as_torch_skips(device, dampening):
    # GradScaler.step(optimizer) hands our fused optimizers the scale and the inf flag as tensors (no sync); torch's
    # unfused optimizers are skipped by the scaler on the host. Both must end identical: a skipped step moves no
    # parameter, state or step count (step 0 included: SGD's new buffer stays new), the schedule's values of the
    # steps taken are the ones used.
    skip = {0, 3, 4, 9}
    for opt_cls, torch_cls, adam, kw in (
        (FusedAdamW, torch.optim.AdamW, True, {}),
        (FusedSGD, torch.optim.SGD, False, {"momentum": 0.9, "dampening": dampening}),
    ):
        if adam and dampening:
            continue
        ours, theirs = params(device), params("cpu")
        a, b = opt_cls(groups(ours), **kw), torch_cls(groups(theirs), foreach=False, **kw)
        scalers = [torch.amp.GradScaler(device, init_scale=2.0**12, growth_interval=2) for _ in range(2)]
        scaled_steps(a, ours, scalers[0], range(12), skip, adam)
        scaled_steps(b, theirs, scalers[1], range(12), skip, adam)
        assert scalers[0].get_scale() == scalers[1].get_scale()
        for p, q in zip(ours, theirs):
            assert_close(p.cpu(), q, 1e-6)
            for key, value in b.state.get(q, {}).items():
                if key == "step":
                    assert a.state[p]["step"].item() == value.item() == 12 - len(skip)
                else:
                    assert_close(a.state[p][key].cpu(), value, 1e-6)


def test_a_skipped_first_momentum_step_leaves_no_buffer_in_the_state_dict(device):
    ours, theirs = params(device), params("cpu")
    a, b = FusedSGD(groups(ours), momentum=0.9), torch.optim.SGD(groups(theirs), momentum=0.9)
    scalers = [torch.amp.GradScaler(device, init_scale=2.0**12) for _ in range(2)]
    scaled_steps(a, ours, scalers[0], [0], {0}, False)
    scaled_steps(b, theirs, scalers[1], [0], {0}, False)
    assert a.state_dict()["state"] == b.state_dict()["state"] == {}


@HOST_KERNELS
def test_a_scaled_kernel_step_reads_nothing_back_to_the_host(monkeypatch):
    # With GradScaler, the skip decision and the unscaling stay on the device: no tensor becomes a python value.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    for opt_cls, kw in ((FusedAdamW, {}), (FusedSGD, {"momentum": 0.9})):
        ps = params()
        opt, scaler = opt_cls(groups(ps), **kw), torch.amp.GradScaler("cpu", init_scale=2.0**12)
        scaled_steps(opt, ps, scaler, range(2), {0}, opt_cls is FusedAdamW)  # compile, allocate
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
                m.setattr(torch.Tensor, name, lambda *args, name=name: pytest.fail(f"Tensor.{name} in a step"))
            scaled_steps(opt, ps, scaler, range(2, 4), {3}, opt_cls is FusedAdamW)


# --------------------------------------------------------- CUDA graphs, emulated: capture, replay, no null buffer
@HOST_KERNELS
def test_a_replay_after_momentum_turned_on_is_refused_and_the_kernel_never_follows_a_null_buffer(monkeypatch):
    # A graph captured while group 0's momentum is 0 holds a null buffer pointer for its parameters. If a schedule
    # then raises the momentum, the replay must not read near address 0 (a crash on a GPU): the host refuses the
    # replay, and the kernel itself takes the buffer path only with a buffer.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    ps = params()
    opt = FusedSGD(groups(ps, momentum=0.0), lr=0.1, momentum=0.9)  # group 0 plain, group 1 with momentum
    grads(ps, 0)
    opt.step()
    opt.step()
    with cuda_on_host.capture(monkeypatch) as graph:
        opt.step()
    opt.param_groups[0]["momentum"] = 0.9
    with pytest.raises(RuntimeError, match=r"param group 0's momentum is now 0.9, but its parameters had no momentum"):
        opt.upload_hyperparameters()
    before = [p.detach().clone() for p in ps]
    cpu = torch.device("cpu")
    opt._hyper[cpu][0, 1] = 0.9  # what the refused upload would have written
    graph.replay()  # plain SGD for group 0 (no buffer), no fault
    lr = opt._hyper[cpu][0, 0].item()
    for p, b in zip(ps[:3], before[:3]):
        if p.grad is not None:
            assert torch.equal(p, b - lr * p.grad)


@HOST_KERNELS
def test_the_host_emulation_reports_a_near_null_access_instead_of_crashing():
    # How the replay fault above showed up on the host: a kernel following a null pointer fails the test with the
    # address (here SGD's per-tensor `first` flags, passed as null) instead of killing the test process.
    kernel = cuda_on_host.host_kernel("sgd_step", torch.float32)
    p, buffer = torch.zeros(8), torch.zeros(8)
    tables = _cuda.tables([[p], [p], [buffer]], [0], 1024)
    hyper = torch.tensor([[0.1, 0.9, 1.0, 0.0, 0.0, 1.0]])
    args = [tables.pointers, tables.numels, tables.group_of, tables.chunks, hyper, None, None, None, 1, 1024]
    with pytest.raises(RuntimeError, match=r"sgd_step faulted at address 0x0 \(near null"):
        kernel(grid=(1, 1, 1), block=(256, 1, 1), args=args)
    args[7] = torch.zeros(1)
    kernel(grid=(1, 1, 1), block=(256, 1, 1), args=args)  # and runs with a real one


@HOST_KERNELS
@pytest.mark.parametrize("opt_cls, kw", [(FusedAdamW, {}), (FusedSGD, {"momentum": 0.9})])
def test_capturing_with_gradients_allocated_anew_is_refused_before_anything_is_built(monkeypatch, opt_cls, kw):
    # torch's whole-network recipe sets gradients to None before capture, so backward allocates new ones inside
    # it; our tables would then be built and uploaded inside the capture. That is refused with the way out.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    ps = params()
    opt = opt_cls(groups(ps), **kw)
    grads(ps, 0)
    opt.step()
    opt.step()
    old = [p.grad for p in ps]  # kept alive, so the new gradients get new addresses
    grads(ps, 1)
    monkeypatch.setattr(_cuda, "device_table", lambda *a, **k: pytest.fail("a table was uploaded while capturing"))
    with cuda_on_host.capture(monkeypatch), pytest.raises(RuntimeError, match=r"zero_grad\(set_to_none=False\)"):
        opt.step()
    assert old


@HOST_KERNELS
def test_a_captured_step_replays_with_a_moving_schedule_and_builds_nothing(monkeypatch):
    # The documented recipe: warm up, keep the gradients allocated, capture step(), then per iteration write new
    # gradients in place, upload the hyperparameters and replay. Against torch's eager SGD with the same values.
    cuda_on_host.run_kernels_on_host(monkeypatch)
    ours, theirs = params(), params()
    opt, ref = (
        FusedSGD(groups(ours), momentum=0.9, nesterov=True),
        torch.optim.SGD(groups(theirs), momentum=0.9, nesterov=True),
    )
    take_steps(opt, ours, False, range(2))
    take_steps(ref, theirs, False, range(2))
    with monkeypatch.context() as m:
        m.setattr(_cuda, "device_table", lambda *a, **k: pytest.fail("a table was uploaded while capturing"))
        with cuda_on_host.capture(monkeypatch) as graph:
            opt.step()
    assert len(graph.launches) == 1  # one launch per device and dtype
    for k in range(2, 8):
        moving(opt, k, False)
        g = torch.Generator().manual_seed(1000 + k)
        for p in ours:
            if p.grad is not None:
                p.grad.copy_(torch.randn(p.shape, generator=g))
        opt.upload_hyperparameters()
        graph.replay()
        take_steps(ref, theirs, False, [k])
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)


# --------------------------------------------------------------------------- devices, dtypes, torch versions
@HOST_KERNELS
def test_one_launch_per_device_and_dtype_and_state_on_another_device_is_refused(monkeypatch):
    cuda_on_host.run_kernels_on_host(monkeypatch)
    launches = []
    monkeypatch.setattr(_cuda, "launch", lambda *args: launches.append(args[-1]) or real_launch(*args))
    g = torch.Generator().manual_seed(4)
    mixed = [
        torch.nn.Parameter(torch.randn(s, generator=g).to(t))
        for s, t in (((5,), torch.bfloat16), ((7,), torch.float32), ((3,), torch.bfloat16))
    ]
    theirs = [torch.nn.Parameter(p.detach().float()) for p in mixed]
    opt, ref = FusedSGD(mixed, lr=0.1, momentum=0.9), torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    for p, q in zip(mixed, theirs):
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        q.grad = p.grad.float()
    opt.step()
    ref.step()
    assert len(launches) == 2 and set(opt._cache) == {
        (torch.device("cpu"), torch.bfloat16),
        (torch.device("cpu"), torch.float32),
    }
    for p, q in zip(mixed, theirs):
        assert_close(p.float(), q.detach().to(p.dtype).float(), 2.0**-8)
    # a state tensor left on another device (the model moved after the optimizer made its state) is refused
    adam = FusedAdamW(mixed[1:2])
    adam.step()
    adam.state[mixed[1]]["exp_avg_sq"] = torch.zeros(7, device="meta")
    with pytest.raises(RuntimeError, match=r"the exp_avg_sq of a parameter of shape \(7,\) on cpu is on meta"):
        adam.step()


def test_parameters_are_grouped_by_device_then_dtype():
    # On a GPU machine: one launch per (device, dtype); here "meta" stands in for a second device.
    ps = [
        torch.nn.Parameter(torch.zeros(2, device=d, dtype=t))
        for d, t in (("cpu", torch.float32), ("meta", torch.float32), ("cpu", torch.bfloat16), ("meta", torch.float32))
    ]
    for p in ps:
        p.grad = torch.zeros_like(p)
    opt = FusedSGD([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1)
    parts = opt._partition()
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert {key: [(gi, id(p)) for gi, p in items] for key, items in parts.items()} == {
        (cpu, torch.float32): [(0, id(ps[0]))],
        (meta, torch.float32): [(0, id(ps[1])), (1, id(ps[3]))],
        (cpu, torch.bfloat16): [(1, id(ps[2]))],
    }


def test_nothing_in_loopkit_needs_torchs_private_cuda_helpers(monkeypatch):
    # torch 2.1 to 2.6 have no _cuda_load_module, torch before 2.10 no _get_gpu_rtc_library. With torch.cuda._utils
    # as torch 2.1 has it, a CUDA build finding no NVRTC gets loopkit's error, not an ImportError.
    import sys
    import types

    old = types.ModuleType("torch.cuda._utils")
    old._get_device_index = lambda *a, **k: 0
    monkeypatch.setitem(sys.modules, "torch.cuda._utils", old)
    monkeypatch.setattr(torch.cuda, "_utils", old, raising=False)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    monkeypatch.delenv("LOOPKIT_NVRTC", raising=False)
    monkeypatch.setattr(_cuda.site, "getsitepackages", list)
    monkeypatch.setattr(_cuda.glob, "glob", lambda pattern: [])
    _cuda.compiled.cache_clear()
    try:
        assert _cuda.nvrtc_library() is None
        with pytest.raises(RuntimeError, match="compile their kernels with NVRTC and found none"):
            _cuda.compiled("adamw_step", torch.float32, 0)
    finally:
        _cuda.compiled.cache_clear()
    sources = pathlib.Path(_cuda.__file__).parent.glob("*.py")
    uses = re.compile(r"from torch\.cuda\._utils import|from torch\.cuda import _utils|torch\.cuda\._utils\.\w")
    assert not [s.name for s in sources if uses.search(s.read_text())]


def test_nvrtc_of_torchs_cuda_major_version_comes_first():
    found = [
        "/usr/local/cuda-13.0/lib64/libnvrtc.so",
        "/site/nvidia/cu13/lib/libnvrtc.so.13",
        "/site/nvidia/cuda_nvrtc/lib/libnvrtc.so",
        "/site/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
        "/usr/local/cuda-12.4/lib64/libnvrtc.so",
    ]
    assert _cuda.nvrtc_candidates(found, 12) == [
        "/site/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
        "/usr/local/cuda-12.4/lib64/libnvrtc.so",
        "/site/nvidia/cuda_nvrtc/lib/libnvrtc.so",
        "/usr/local/cuda-13.0/lib64/libnvrtc.so",
        "/site/nvidia/cu13/lib/libnvrtc.so.13",
    ]


class FakeDriver:
    """libcuda's entry points that loopkit calls, in python: a loaded "cubin" is the name of a host kernel, and a
    launch runs it with the very argument array loopkit built for cuLaunchKernel."""

    def __init__(self, load_error=0):
        self.load_error, self.kernels, self.contexts, self.launches = load_error, {}, [], []

    def cuCtxPushCurrent_v2(self, context):
        self.contexts.append(context.value)
        return 0

    def cuCtxPopCurrent_v2(self, out):
        self.contexts.pop()
        return 0

    def cuModuleLoadData(self, module, image):
        module._obj.value = 1
        self.image = image
        return self.load_error

    def cuModuleGetFunction(self, function, module, name):
        self.kernels[len(self.kernels) + 1] = cuda_on_host.host_kernel(name.decode(), torch.float32)
        function._obj.value = len(self.kernels)
        return 0

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        assert self.contexts == [101] and (gy, gz, by, bz, shared, extra) == (1, 1, 1, 1, 0, None)
        self.launches.append(stream.value)
        self.kernels[function.value].run(gx, bx, list(params_values(params, self.kernels[function.value])))
        return 0

    def cuGetErrorName(self, result, out):
        out._obj.value = b"CUDA_ERROR_NO_BINARY_FOR_GPU"

    def cuGetErrorString(self, result, out):
        out._obj.value = b"no kernel image is available for execution on the device"

    def cuDriverGetVersion(self, out):
        out._obj.value = 12020
        return 0


def params_values(params, kernel):
    """Read cuLaunchKernel's void* array back as the values loopkit meant: pointers and C ints, in order."""
    for i, ctype in enumerate(kernel.parameters):
        cell = ctypes.cast(params[i], ctypes.POINTER(ctypes.c_int if ctype == "int" else ctypes.c_void_p))
        yield (ctypes.c_int if ctype == "int" else ctypes.c_void_p)(cell.contents.value)


@HOST_KERNELS
def test_the_driver_launch_path_passes_the_arguments_the_kernel_expects(monkeypatch):
    # loopkit's own cuModuleLoadData / cuLaunchKernel calls (which replace torch's private helpers), against a
    # driver stand-in that runs the host kernel with the argument array loopkit built: parity with torch.
    from loopkit.optim import _driver

    fake = FakeDriver()
    monkeypatch.setattr(_driver, "libcuda", lambda: fake)
    monkeypatch.setattr(_driver, "primary_context", lambda index: ctypes.c_void_p(100 + index))
    monkeypatch.setattr(base.FusedOptimizer, "_runs_kernels", staticmethod(lambda device: True))
    # as for parameters on cuda:1 while device 0 is current: loaded and launched in device 1's context
    monkeypatch.setattr(_cuda, "compiled", lambda name, dtype, index, options: _driver.load(b"cubin", name, 1))
    ours, theirs = params(), params()
    take_steps(FusedSGD(groups(ours), momentum=0.9), ours, False, range(3))
    take_steps(torch.optim.SGD(groups(theirs), momentum=0.9), theirs, False, range(3))
    for p, q in zip(ours, theirs):
        assert_close(p, q, 1e-6)
    assert fake.launches == [None] * 3 and fake.contexts == []  # the host stand-in's "stream", contexts popped
    fake.load_error = 209
    with pytest.raises(RuntimeError, match=r"driver \(version 12.2\) could not load .* by NVRTC 13.0.*NO_BINARY"):
        _driver.load(b"cubin", "sgd_step", 0, "(compiled for sm_90 by NVRTC 13.0, libnvrtc.so.13)")


def test_a_launch_goes_to_the_current_stream_of_the_parameters_device(monkeypatch):
    # Not the current device's stream: the uploads before it went to the parameters' device's current stream.
    launched = []
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    tables = _cuda.Tables(*[torch.zeros(1)] * 4, n_chunks=3, chunk_size=1024)
    kernel = lambda **kw: launched.append(kw)  # noqa: E731
    _cuda.launch(kernel, tables, torch.zeros(1), [None], 5, torch.device("cuda", 1))
    assert launched[0]["stream"] == "stream of cuda:1" and launched[0]["grid"] == (3, 1, 1)
    assert launched[0]["args"][5:] == [None, 5, 1024]


ASAN_PROBE = """
import sys
import torch
from tests import cuda_on_host
from loopkit.optim import FusedAdamW, FusedSGD, _base, _cuda

cuda_on_host.EXTRA_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer")
_base.FusedOptimizer._runs_kernels = staticmethod(lambda device: True)
_cuda.compiled = cuda_on_host.host_kernel
g = torch.Generator().manual_seed(0)
ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(37, 19), (19,), (0, 4), (5, 3, 2), (4001,), (7,)]]
for cls, kw in ((FusedAdamW, {}), (FusedSGD, {"momentum": 0.9})):
    opt = cls(ps, lr=0.01, **kw)
    opt.chunk_size = 1000
    for k in range(2):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
print("clean", flush=True)
# then a deliberate overrun, to show that the sanitizer sees one: a size table claiming 9 elements of a tensor of 7
p = torch.zeros(7)
tables = _cuda.tables([[p], [p], [torch.zeros(7)]], [0], 1000)
tables.numels[0] = 9
hyper = torch.tensor([[0.1, 0.9, 1.0, 0.0, 0.0, 1.0]])
args = [tables.pointers, tables.numels, tables.group_of, tables.chunks, hyper, None, None, torch.zeros(1), 1, 1000]
cuda_on_host.host_kernel("sgd_step", torch.float32)(grid=(1, 1, 1), block=(256, 1, 1), args=args)
print("overrun not seen", flush=True)
"""


@HOST_KERNELS
def test_the_kernels_read_and_write_only_their_tensors_under_addresssanitizer(tmp_path):
    # Reads past a tensor's end that stay inside other host memory fault nowhere; AddressSanitizer sees them. The
    # kernels run under it (python with libasan preloaded, kernels built with -fsanitize=address) over the parity
    # shapes, vector and tail paths, both optimizers: no report; then one deliberate overrun must be reported.
    import os
    import subprocess
    import sys

    asan = subprocess.run([cuda_on_host.compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True)
    if not os.path.isabs(asan.stdout.strip()):
        pytest.skip("g++ has no AddressSanitizer runtime")
    (tmp_path / "probe.py").write_text(ASAN_PROBE)
    env = {**os.environ, "LD_PRELOAD": asan.stdout.strip(), "ASAN_OPTIONS": "detect_leaks=0"}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).parent.parent)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "probe.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["PYTHONPATH"],
        timeout=300,
    )
    # AddressSanitizer stops the process at its first report: "clean" printed means the real steps made none
    assert "clean" in result.stdout, result.stdout + result.stderr[-3000:]
    assert "overrun not seen" not in result.stdout, result.stdout
    assert "ERROR: AddressSanitizer" in result.stderr and "READ of size 16" in result.stderr, result.stderr[-3000:]
