"""NVRTC compile time of the fused kernels (first use on a device; then cached per device, dtype and options).

Runs wherever an NVRTC library exists (``loopkit.optim._cuda.nvrtc_library``), GPU or not: compiling needs no
GPU. Compares loopkit's ctypes calls with NVIDIA's cuda-python bindings (``cuda.bindings.nvrtc``) on the same
source and options, when those are installed, to back the choice made in docs/optim.md.

    LOOPKIT_NVRTC=/path/to/libnvrtc.so.13 pytest benchmarks/bench_compile.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import pytest
import torch

from loopkit.optim import _cuda

LIB = _cuda.nvrtc_library()
NVRTC = pytest.mark.skipif(LIB is None, reason="no NVRTC library on this machine (set LOOPKIT_NVRTC)")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@NVRTC
@pytest.mark.parametrize("output", ["cubin", "ptx"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_nvrtc_compile(benchmark, name, dtype, output):
    options = [f"-DPARAM_KIND={_cuda.PARAM_KINDS[DTYPES[dtype]]}"]
    binary = benchmark.pedantic(
        _cuda.nvrtc_compile,
        args=(LIB, _cuda.source(name), "90", options, output),
        rounds=5,
        iterations=1,
        warmup_rounds=1,
    )
    assert binary


@NVRTC
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_cuda_python_compile(benchmark, name):
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    options = [b"--gpu-architecture=sm_90", b"--std=c++17", b"-DPARAM_KIND=0"]

    def compile_cubin() -> bytes:
        _, prog = nvrtc.nvrtcCreateProgram(_cuda.source(name).encode(), b"loopkit.cu", 0, [], [])
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, result
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        nvrtc.nvrtcDestroyProgram(prog)
        return cubin

    assert benchmark.pedantic(compile_cubin, rounds=5, iterations=1, warmup_rounds=1)
