"""Run loopkit's CUDA kernel sources on the host, through the fused optimizers' own launch path.

The kernel source (``loopkit/optim/kernels``) is compiled with g++ behind the prelude ``cuda_on_host.h`` and
called with the same argument list the optimizer hands to the GPU. Everything on the launch path runs for real:
the pointer/size/group/chunk tables, the step counters, the hyperparameter table and the kernel arithmetic.
Only the compiler (g++, not NVRTC) and the driver differ. In a test::

    run_kernels_on_host(monkeypatch)
    opt.step()      # CPU tensors, CUDA kernel code
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import pathlib
import re
import shutil
import subprocess
import tempfile

import torch

from loopkit.optim import _base, _cuda

PRELUDE = pathlib.Path(__file__).with_name("cuda_on_host.h")
BUILD = pathlib.Path(tempfile.gettempdir()) / "loopkit-kernels-on-host"


def compiler() -> str | None:
    return shutil.which("g++")


class HostKernel:
    """Callable like torch's ``_CudaKernel``: ``kernel(grid=, block=, args=)``, checking ``args`` against the
    kernel's C signature (count, pointer or int, and no python float, which torch would pass as a double)."""

    def __init__(self, library: ctypes.CDLL, name: str) -> None:
        self.name = name
        self._launch = getattr(library, f"launch_{name}")
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        signature = getattr(library, f"signature_{name}")
        signature.restype = ctypes.c_char_p
        found = re.search(r"A = \{(.*)\}", signature().decode())
        self.parameters = [t.strip() for t in found.group(1).split(",")]
        self._vector_accesses, self._misaligned = library.vector_accesses, library.misaligned_accesses
        self._vector_accesses.restype = self._misaligned.restype = ctypes.c_ulonglong

    def vector_accesses(self) -> int:
        """16- and 8-byte loads and stores made so far by this compiled source (all launches)."""
        return self._vector_accesses()

    def __call__(self, grid=(1, 1, 1), block=(1, 1, 1), args=None, shared_mem=0, stream=None) -> None:
        args = list(args or [])
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name} takes {len(self.parameters)} arguments {self.parameters}, got {len(args)}")
        if tuple(grid[1:]) != (1, 1) or tuple(block[1:]) != (1, 1) or not 0 < block[0] <= 1024:
            raise ValueError(f"{self.name}: one-dimensional launches with at most 1024 threads, got {grid}, {block}")
        keep = []
        for position, (arg, ctype) in enumerate(zip(args, self.parameters)):
            if isinstance(arg, torch.Tensor):
                if not ctype.endswith("*"):
                    raise TypeError(f"{self.name} argument {position} is {ctype}, got a tensor")
                if arg.device.type != "cpu":
                    raise TypeError(f"{self.name} argument {position}: host kernels take CPU tensors")
                keep.append(ctypes.c_void_p(arg.data_ptr()))
            elif isinstance(arg, int) and not isinstance(arg, bool):
                if ctype != "int":
                    raise TypeError(f"{self.name} argument {position} is {ctype}, got the python int {arg}")
                keep.append(ctypes.c_int(arg))
            else:
                raise TypeError(f"{self.name} argument {position} is {ctype}, got {arg!r} ({type(arg).__name__})")
        pointers = (ctypes.c_void_p * len(keep))(*(ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep))
        misaligned = self._misaligned()
        self._launch(grid[0], block[0], pointers)
        if self._misaligned() != misaligned:
            raise RuntimeError(
                f"{self.name} made {self._misaligned() - misaligned} misaligned vector accesses, which fault on a GPU"
            )


@functools.cache
def host_kernel(name: str, dtype: torch.dtype, device_index: int = 0, options: tuple[str, ...] = ()) -> HostKernel:
    """Same signature as ``loopkit.optim._cuda.compiled``; compiles once per source, dtype and options."""
    text = (
        PRELUDE.read_text()
        + _cuda.source(name.removesuffix("_step"))
        + f'\nextern "C" void launch_{name}(unsigned grid, unsigned block, void** args)'
        f" {{ loopkit_launch({name}, grid, block, args); }}"
        + f'\nextern "C" const char* signature_{name}() {{ return loopkit_signature({name}); }}'
        + '\nextern "C" unsigned long long vector_accesses() { return loopkit_vector_accesses; }'
        + '\nextern "C" unsigned long long misaligned_accesses() { return loopkit_misaligned; }\n'
    )
    flags = [f"-DPARAM_KIND={_cuda.PARAM_KINDS[dtype]}", *options]
    digest = hashlib.sha256((text + " ".join(flags)).encode()).hexdigest()[:16]
    library = BUILD / f"{name}-{digest}.so"
    if not library.exists():
        BUILD.mkdir(exist_ok=True)
        partial = library.with_suffix(f".{digest}.tmp")
        subprocess.run(
            [
                compiler(),
                "-std=c++17",
                "-O2",
                "-shared",
                "-fPIC",
                "-Wall",
                "-Wno-unknown-pragmas",
                *flags,
                "-x",
                "c++",
                "-",
                "-o",
                str(partial),
            ],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        partial.replace(library)  # atomic: parallel test runs never load a half-written library
    return HostKernel(ctypes.CDLL(str(library)), name)


def run_kernels_on_host(monkeypatch) -> None:
    """From now until ``monkeypatch`` undoes it, a fused optimizer with CPU parameters launches its kernels on
    the host instead of running the reference implementation."""
    monkeypatch.setattr(_base.FusedOptimizer, "_runs_kernels", staticmethod(lambda p: True))
    monkeypatch.setattr(_cuda, "compiled", host_kernel)
