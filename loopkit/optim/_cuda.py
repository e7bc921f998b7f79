"""Compiling and launching the fused kernels: NVRTC through torch, cached per device, kernel and dtype.

``torch.cuda._compile_kernel`` (NVRTC to PTX, loaded with the driver API) needs no nvcc on the user's machine
and no dependency beyond torch; cuda-python would add a package for the same NVRTC calls.
"""

from __future__ import annotations

import functools
import pathlib

import torch

KERNELS = pathlib.Path(__file__).resolve().parent / "kernels"
PARAM_KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
CHUNK = 65536      # elements per thread block
THREADS = 256


@functools.lru_cache(maxsize=None)
def _source(name: str) -> str:
    return (KERNELS / "common.cuh").read_text() + "\n" + (KERNELS / f"{name}.cu").read_text()


@functools.lru_cache(maxsize=None)
def compiled(name: str, dtype: torch.dtype, device_index: int):
    """The kernel ``name`` (``"adamw_step"`` in ``adamw.cu``...) for parameters of ``dtype`` on one device."""
    major, minor = torch.cuda.get_device_capability(device_index)
    with torch.cuda.device(device_index):
        return torch.cuda._compile_kernel(_source(name.removesuffix("_step")), name,
                                          compute_capability=f"{major}{minor}",
                                          nvcc_options=[f"-DPARAM_KIND={PARAM_KINDS[dtype]}", "-O3"])


def device_table(rows: list[list[int]], device: torch.device, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A small host table sent to the device through pinned memory, without blocking the host."""
    host = torch.tensor(rows, dtype=dtype).pin_memory()
    return host.to(device, non_blocking=True)


def chunks_of(numels: list[int]) -> list[list[int]]:
    """(tensor index, chunk index) for every CHUNK-sized piece of every non-empty tensor."""
    return [[t, c] for t, n in enumerate(numels) for c in range((n + CHUNK - 1) // CHUNK)]


def launch(kernel, table: torch.Tensor, numels: torch.Tensor, group_of: torch.Tensor, chunks: torch.Tensor,
           n_chunks: int, hyper: torch.Tensor, n_tensors: int, *extra: int) -> None:
    if n_chunks:
        kernel(grid=(n_chunks, 1, 1), block=(THREADS, 1, 1),
               args=[table, numels, group_of, chunks, hyper, n_tensors, CHUNK, *extra])
