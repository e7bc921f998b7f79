"""The CUDA driver API calls that load a cubin and launch a kernel, through ctypes on ``libcuda``.

Written out here, not taken from ``torch.cuda._utils``: those helpers are private, appeared in torch 2.7 to 2.10
and change between releases, while the driver API below has been stable since CUDA 4. Every call runs with the
target device's primary context current (the one torch uses), so a kernel loads and launches on the parameters'
device whichever device is current, and on the stream the caller passes (that device's current stream).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

import torch

#: Driver errors that mean "this driver cannot run this cubin" (too old for the NVRTC that compiled it, or a
#: cubin for another GPU): the error then names both versions.
SKEW_ERRORS = {200, 209, 218, 222, 300, 500}


@functools.cache
def libcuda() -> ctypes.CDLL:
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as error:
        raise RuntimeError(
            f"loopkit's fused optimizers load their kernels with the CUDA driver and could not open {name} "
            f"({error}): is an NVIDIA driver installed?"
        ) from error
    v = ctypes.c_void_p
    lib.cuLaunchKernel.argtypes = [v, *[ctypes.c_uint] * 7, v, v, v]
    lib.cuModuleLoadData.argtypes = [v, v]
    lib.cuModuleGetFunction.argtypes = [v, v, ctypes.c_char_p]
    check(lib, lib.cuInit(0), "initialising the CUDA driver")
    return lib


def error_text(lib: Any, result: int) -> str:
    name, text = ctypes.c_char_p(), ctypes.c_char_p()
    lib.cuGetErrorName(result, ctypes.byref(name))
    lib.cuGetErrorString(result, ctypes.byref(text))
    return f"{(name.value or b'CUDA error').decode()} ({result}): {(text.value or b'').decode()}"


def check(lib: Any, result: int, doing: str) -> None:
    if result != 0:
        raise RuntimeError(f"CUDA driver error while {doing}: {error_text(lib, result)}")


def driver_version(lib: Any) -> str:
    version = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return "unknown"
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


@functools.cache
def primary_context(device_index: int) -> ctypes.c_void_p:
    """The device's primary context, retained once per process: the context torch's runtime calls use."""
    lib = libcuda()
    device, context = ctypes.c_int(), ctypes.c_void_p()
    check(lib, lib.cuDeviceGet(ctypes.byref(device), device_index), f"getting device {device_index}")
    check(
        lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), f"retaining device {device_index}'s context"
    )
    return context


class _Current:
    """Make a device's primary context current for the calls inside ``with``, then restore the previous one."""

    def __init__(self, device_index: int) -> None:
        self.lib, self.context = libcuda(), primary_context(device_index)

    def __enter__(self) -> None:
        check(self.lib, self.lib.cuCtxPushCurrent_v2(self.context), "making the device's context current")

    def __exit__(self, *exc: Any) -> None:
        self.lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))


def load(image: bytes, name: str, device_index: int, describe: str = "") -> Kernel:
    """Load a cubin into the device's primary context and return its kernel ``name``.

    ``describe`` (which NVRTC made the cubin) goes into the error when the driver cannot load it."""
    lib = libcuda()
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    with _Current(device_index):
        result = lib.cuModuleLoadData(ctypes.byref(module), image)
        if result != 0:
            hint = (
                " An NVRTC newer than the driver makes cubins the driver cannot load: install a driver of that CUDA "
                "version or newer, or set LOOPKIT_NVRTC to the libnvrtc of the CUDA version the driver supports."
                if result in SKEW_ERRORS
                else ""
            )
            raise RuntimeError(
                f"the CUDA driver (version {driver_version(lib)}) could not load loopkit's {name} kernel "
                f"{describe}: {error_text(lib, result)}.{hint}"
            )
        check(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()), f"finding {name}")
    return Kernel(name, function, device_index, module)


class Kernel:
    """A loaded kernel, called like torch's ``_CudaKernel``: ``kernel(grid=, block=, args=, stream=)``.

    ``args`` are tensors (their device address), None (a null pointer) or python ints (a C ``int``); the caller
    matches them to the kernel's C signature (tests/cuda_on_host.py checks that on the host)."""

    def __init__(self, name: str, function: ctypes.c_void_p, device_index: int, module: ctypes.c_void_p) -> None:
        self.name, self.function, self.device_index, self.module = name, function, device_index, module

    def __call__(
        self,
        grid: tuple[int, int, int] = (1, 1, 1),
        block: tuple[int, int, int] = (1, 1, 1),
        args: list | None = None,
        shared_mem: int = 0,
        stream: Any = None,
    ) -> None:
        values: list[Any] = []
        for arg in args or []:
            if isinstance(arg, torch.Tensor):
                values.append(ctypes.c_void_p(arg.data_ptr()))
            elif arg is None:
                values.append(ctypes.c_void_p(None))
            elif isinstance(arg, int) and not isinstance(arg, bool):
                values.append(ctypes.c_int(arg))
            else:
                raise TypeError(f"{self.name}: kernel arguments are tensors, None or ints, got {arg!r}")
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *(ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values)
        )
        handle = ctypes.c_void_p(stream.cuda_stream if stream is not None else None)
        lib = libcuda()
        with _Current(self.device_index):
            result = lib.cuLaunchKernel(self.function, *grid, *block, shared_mem, handle, pointers, None)
        check(lib, result, f"launching {self.name} on device {self.device_index}")
