"""Compiling and launching the fused kernels: NVRTC at first use, cached per device, kernel and dtype.

We call NVRTC directly (the ``libnvrtc`` that torch's CUDA wheels ship) and load the cubin with the driver API
(``_driver.py``); nothing from ``torch.cuda._utils``, whose private helpers differ between torch releases.
``torch.cuda._compile_kernel`` would do the same but insists on a CUDA toolkit (``CUDA_HOME``) to add include
paths; the kernels include no headers, so users need neither nvcc nor a toolkit. cuda-python would add a
dependency for the same calls.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import pathlib
import re
import site
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import torch

from . import _driver

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"
PARAM_KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
THREADS = 256  # per block; the kernels' __launch_bounds__


@functools.cache
def source(name: str) -> str:
    """The full source of ``kernels/<name>.cu``, with the shared definitions in front."""
    return (KERNELS / "common.cuh").read_text() + "\n" + (KERNELS / f"{name}.cu").read_text()


def nvrtc_compile(libnvrtc: ctypes.CDLL, src: str, arch: str, options: list[str], output: str = "cubin") -> bytes:
    """Compile CUDA C++ ``src`` with NVRTC for ``sm_<arch>``; raise with NVRTC's log on failure.

    ``output="cubin"`` (what loopkit loads) is machine code for that GPU, so the driver has no PTX to JIT: no
    first-launch delay, and no failure when NVRTC is newer than the driver (which cannot JIT newer PTX).
    ``output="ptx"`` (for inspection) is PTX for ``compute_<arch>``.
    """
    prog = ctypes.c_void_p()
    check = _checker(libnvrtc)
    check(libnvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"loopkit.cu", 0, None, None))
    try:
        target = f"sm_{arch}" if output == "cubin" else f"compute_{arch}"
        opts = [f"--gpu-architecture={target}".encode(), b"--std=c++17", *(o.encode() for o in options)]
        result = libnvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if result != 0:
            size = ctypes.c_size_t()
            libnvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            libnvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"NVRTC could not compile loopkit's kernel for {target}:\n{log.value.decode()}")
        get_size, get = (
            (libnvrtc.nvrtcGetCUBINSize, libnvrtc.nvrtcGetCUBIN)
            if output == "cubin"
            else (libnvrtc.nvrtcGetPTXSize, libnvrtc.nvrtcGetPTX)
        )
        size = ctypes.c_size_t()
        check(get_size(prog, ctypes.byref(size)))
        binary = ctypes.create_string_buffer(size.value)
        check(get(prog, binary))
        return binary.raw
    finally:
        libnvrtc.nvrtcDestroyProgram(ctypes.byref(prog))


def _checker(libnvrtc: ctypes.CDLL) -> Callable[[int], None]:
    def check(result: int) -> None:
        if result != 0:
            libnvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"NVRTC error {result}: {libnvrtc.nvrtcGetErrorString(result).decode()}")

    return check


def _major(path: str) -> int | None:
    """The CUDA major version in a libnvrtc file name (``libnvrtc.so.12``, ``.../cuda-12.4/lib64/libnvrtc.so``)."""
    found = re.search(r"libnvrtc\.so\.(\d+)", path) or re.search(r"cuda-(\d+)", path)
    return int(found.group(1)) if found else None


def nvrtc_candidates(found: list[str], cuda_major: int | None) -> list[str]:
    """``found`` ordered for loading: those of torch's CUDA major version first (a cubin from a newer major may
    not load on the driver torch was built for), then those of unknown version, then the others."""

    def rank(path: str) -> int:
        major = _major(path)
        return 0 if cuda_major is not None and major == cuda_major else 1 if major is None else 2

    return sorted(found, key=rank)  # stable: the search order within a rank


def nvrtc_version(libnvrtc: ctypes.CDLL) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    if libnvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        return "unknown"
    return f"{major.value}.{minor.value}"


def nvrtc_library() -> ctypes.CDLL | None:
    """An NVRTC library to compile with, or None: ``$LOOPKIT_NVRTC`` (a path), else one of torch's CUDA major
    version if any (``libnvrtc.so.<major>``, which torch's CUDA wheels bring), else NVIDIA's ``nvidia-cuda-nvrtc``
    wheels' or a CUDA toolkit's, matching major version first. The kernels compile without a GPU, so a CPU-only
    machine with one of these can check them (the tests and ``benchmarks/bench_compile.py`` do)."""
    if os.environ.get("LOOPKIT_NVRTC"):
        return ctypes.CDLL(os.environ["LOOPKIT_NVRTC"])
    cuda_major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
    found = [f"libnvrtc.so.{cuda_major}"] if cuda_major is not None else []
    found += [p for d in site.getsitepackages() for p in sorted(glob.glob(f"{d}/nvidia/*/lib/libnvrtc.so*"))]
    found += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"))
    for path in nvrtc_candidates(found, cuda_major):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


@functools.cache
def compiled(name: str, dtype: torch.dtype, device_index: int, options: tuple[str, ...] = ()) -> _driver.Kernel:
    """The kernel ``name`` (``"adamw_step"`` in ``adamw.cu``...) for parameters of ``dtype`` on one device,
    compiled with extra NVRTC ``options`` (``("-DILP=4",)``: the benchmark sweep's tuning knobs)."""
    libnvrtc = nvrtc_library()
    if libnvrtc is None:
        raise RuntimeError(
            "loopkit's fused optimizers compile their kernels with NVRTC and found none: install "
            "a CUDA build of torch (it ships one), or set LOOPKIT_NVRTC=/path/to/libnvrtc.so"
        )
    major, minor = torch.cuda.get_device_capability(device_index)
    cubin = nvrtc_compile(
        libnvrtc,
        source(name.removesuffix("_step")),
        f"{major}{minor}",
        [f"-DPARAM_KIND={PARAM_KINDS[dtype]}", *options],
    )
    made_by = f"(compiled for sm_{major}{minor} by NVRTC {nvrtc_version(libnvrtc)}, {libnvrtc._name})"
    return _driver.load(cubin, name, device_index, made_by)


def capturing() -> bool:
    """Whether the current CUDA stream is capturing a graph (never on a machine without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def device_table(
    rows: Sequence[float] | Sequence[Sequence[float]], device: torch.device, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """A small host table sent to the device through pinned memory, without blocking the host."""
    host = torch.tensor(rows, dtype=dtype)
    if device.type == "cpu":  # the kernels run on the host only in the tests
        return host
    return host.pin_memory().to(device, non_blocking=True)


class Tables(NamedTuple):
    """What one launch reads besides the hyperparameters, all on the parameters' device."""

    pointers: torch.Tensor  # int64 [n_columns, n_tensors]: param, grad, state... addresses
    numels: torch.Tensor  # int64 [n_tensors]
    group_of: torch.Tensor  # int32 [n_tensors]: each tensor's row in the hyperparameter table
    chunks: torch.Tensor  # int32 [n_chunks, 2]: tensor index, chunk index; one thread block each
    n_chunks: int
    chunk_size: int


def tables(columns: Sequence[Sequence[torch.Tensor | None]], groups: list[int], chunk_size: int) -> Tables:
    """Build the tables for tensors ``columns[c][t]`` (column 0 the parameters; None for a state the kernel will
    not touch), tensor t in group ``groups[t]``."""
    params = cast("Sequence[torch.Tensor]", columns[0])  # column 0 holds the parameters: never None
    device = params[0].device
    numels = [p.numel() for p in params]
    chunks = [[t, c] for t, n in enumerate(numels) for c in range((n + chunk_size - 1) // chunk_size)]
    return Tables(
        device_table([list(addresses(column)) for column in columns], device),
        device_table(numels, device),
        device_table(groups, device, torch.int32),
        device_table(chunks or [[0, 0]], device, torch.int32),
        len(chunks),
        chunk_size,
    )


_data_ptr = torch.Tensor.data_ptr


def addresses(column: Sequence[torch.Tensor | None]) -> tuple[int, ...]:
    """The tensors' device addresses for the pointer table; None (a state the kernel will not touch) is null.
    Computed at every step to notice a moved tensor, hence the map over the method (half the cost of a loop)."""
    try:
        return tuple(map(_data_ptr, column))  # type: ignore[arg-type]  # a None raises TypeError, caught below
    except TypeError:  # a None in the column
        return tuple(0 if t is None else t.data_ptr() for t in column)


def launch(
    kernel: Any,
    tables: Tables,
    hyper: torch.Tensor,
    pointers: list[torch.Tensor | None],
    n_tensors: int,
    device: torch.device,
) -> None:
    """One launch over ``tables``: arguments (tables, hyper, ``pointers``, n_tensors, chunk_size) in the kernels' C
    order, on ``device`` and its current stream, whichever device is current (the uploads went to that stream)."""
    if not tables.n_chunks:
        return
    args: list[torch.Tensor | int | None] = [tables.pointers, tables.numels, tables.group_of, tables.chunks, hyper]
    args += [*pointers, n_tensors, tables.chunk_size]
    if device.type == "cuda":
        kernel(grid=(tables.n_chunks, 1, 1), block=(THREADS, 1, 1), args=args, stream=torch.cuda.current_stream(device))
    else:  # the kernels run on the host only in the tests
        kernel(grid=(tables.n_chunks, 1, 1), block=(THREADS, 1, 1), args=args)
