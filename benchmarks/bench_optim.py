"""Optimizer-step speed: loopkit's fused AdamW / SGD-momentum vs torch.optim for-loop, foreach and fused.

Shapes: (a) GPT-2 small's parameter list (124.4M parameters in 148 tensors), (b) one 64M-parameter tensor,
(c) GPT-2 medium's list (354.8M in 292 tensors). Reported in ``extra_info``: ms per step, effective GB/s and the
fraction of a device-to-device copy's bandwidth measured in the same run. Bytes per parameter per step:
AdamW 28 (read param, grad, exp_avg, exp_avg_sq = 16; write param, exp_avg, exp_avg_sq = 12), SGD with
momentum 20 (read param, grad, buffer = 12; write param, buffer = 8), all float32. The copy moves 8 bytes per
element (read + write). GPU cases skip without CUDA; the ``cpu_small`` case runs anywhere.

    pytest benchmarks/bench_optim.py --benchmark-only --benchmark-columns=median,iqr,rounds -s

``test_gpu_sweep`` times loopkit's kernels over chunk sizes and ILP (vector groups in flight per thread) to pick
the defaults; the single 64M tensor against the 148-tensor list measures what multi-tensor apply costs over one
flat buffer.
"""

from __future__ import annotations

import pytest
import torch

from loopkit.optim import FusedAdamW, FusedSGD

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BYTES = {"adamw": 28, "sgd": 20}
STEPS = 10
_copy_gbps: dict[str, float] = {}


def gpt2_shapes(layers: int, d: int, vocab: int = 50257, context: int = 1024) -> list[tuple[int, ...]]:
    block = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return [(vocab, d), (context, d)] + block * layers + [(d,), (d,)]


SHAPES = {"gpt2_124M": gpt2_shapes(12, 768), "one_64M": [(64 * 2**20,)], "gpt2_355M": gpt2_shapes(24, 1024)}
# GPT-2 small's 148 tensors at 1/64 of each dimension (about 0.1M parameters): the step is host-bound, so this
# measures per-step overhead (python, launches) against torch's C++ fused path.
HOST_BOUND = {"gpt2_148_tiny": [tuple(max(1, d // 64) for d in s) for s in gpt2_shapes(12, 768)]}


def make(kind: str, impl: str, shapes, device: str):
    ps = [torch.nn.Parameter(torch.randn(s, device=device) * 0.02) for s in shapes]
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-3
    if impl == "loopkit":
        return ps, (FusedAdamW(ps, lr=1e-3) if kind == "adamw" else FusedSGD(ps, lr=1e-3, momentum=0.9))
    flags = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    if kind == "adamw":
        return ps, torch.optim.AdamW(ps, lr=1e-3, **flags)
    return ps, torch.optim.SGD(ps, lr=1e-3, momentum=0.9, **flags)


def copy_bandwidth() -> float:
    if "gbps" not in _copy_gbps:
        src = torch.empty(256 * 2**20, device="cuda")
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        _copy_gbps["gbps"] = 20 * 8 * src.numel() / (start.elapsed_time(end) * 1e-3) / 1e9
    return _copy_gbps["gbps"]


def measure(benchmark, ps, opt, kind: str, label: str, rounds: int = 10) -> None:
    """Median time of one step over rounds of STEPS queued steps, with GB/s and the fraction of copy bandwidth."""
    n = sum(p.numel() for p in ps)
    for _ in range(3):  # compile, allocate state
        opt.step()
    torch.cuda.synchronize()

    def steps():
        for _ in range(STEPS):
            opt.step()
        torch.cuda.synchronize()

    benchmark.pedantic(steps, rounds=rounds, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.median / STEPS
    gbps = BYTES[kind] * n / seconds / 1e9
    benchmark.extra_info.update(
        params=n,
        tensors=len(ps),
        ms_per_step=seconds * 1e3,
        gbps=gbps,
        copy_gbps=copy_bandwidth(),
        fraction_of_copy=gbps / copy_bandwidth(),
    )
    print(
        f"\n{label}: {seconds * 1e3:.3f} ms/step, {gbps:.0f} GB/s, "
        f"{gbps / copy_bandwidth():.0%} of copy ({copy_bandwidth():.0f} GB/s)"
    )


@CUDA
@pytest.mark.parametrize("shape", [*SHAPES, *HOST_BOUND])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("impl", ["loopkit", "fused", "foreach", "forloop"])
def test_gpu_step(benchmark, shape, kind, impl):
    ps, opt = make(kind, impl, {**SHAPES, **HOST_BOUND}[shape], "cuda")
    measure(benchmark, ps, opt, kind, f"{kind} {impl} {shape}")


@CUDA
@pytest.mark.parametrize("shape", ["gpt2_124M"])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("impl", ["loopkit+amp", "fused+amp"])
def test_gpu_amp_step(benchmark, shape, kind, impl):
    """Under GradScaler: grad_scale and found_inf as GradScaler.step hands them to a fused optimizer (unscale in
    the kernel, skip flag read per block). Same bytes moved; what the division and the flag cost."""
    ps, opt = make(kind, impl.removesuffix("+amp"), SHAPES[shape], "cuda")
    opt.grad_scale = torch.full((1,), 1024.0, device="cuda")
    opt.found_inf = torch.zeros((), device="cuda")
    measure(benchmark, ps, opt, kind, f"{kind} {impl} {shape}")


@CUDA
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("chunk_size", [16384, 32768, 65536, 131072])
@pytest.mark.parametrize("ilp", [1, 2, 4])
def test_gpu_sweep(benchmark, shape, kind, chunk_size, ilp):
    """loopkit's tuning knobs: elements per thread block, and vector groups in flight per thread."""
    ps, opt = make(kind, "loopkit", SHAPES[shape], "cuda")
    opt.chunk_size, opt.kernel_options = chunk_size, (f"-DILP={ilp}",)
    measure(benchmark, ps, opt, kind, f"sweep {kind} {shape} chunk={chunk_size} ilp={ilp}", rounds=5)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("impl", ["loopkit", "foreach"])
def test_cpu_small(benchmark, kind, impl):
    """The reference path on a small list: keeps the suite meaningful on a machine without a GPU."""
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)
    _ps, opt = make(kind, impl, [(256, 256)] * 8, "cpu")
    benchmark(opt.step)
