"""Run loopkit's CUDA kernel sources on the host, through the fused optimizers' own launch path.

The kernel source (``loopkit/optim/kernels``) is compiled with g++ behind the prelude ``cuda_on_host.h`` and
called with the same argument list the optimizer hands to the GPU. Everything on the launch path runs for real:
the pointer/size/group/chunk tables, the step counters, the hyperparameter table and the kernel arithmetic.
Only the compiler (g++, not NVRTC) and the driver differ. In a test::

    run_kernels_on_host(monkeypatch)
    opt.step()      # CPU tensors, CUDA kernel code

Beyond running the code, a launch checks what a GPU would fault on or get wrong silently: the argument list
against the kernel's C signature, misaligned vector accesses, and any fault (a near-null address is named as
such). ``ORDER_SEED`` shuffles the order of the simulated threads, ``EXTRA_FLAGS`` builds with other g++ flags
(FMA contraction, as the GPU compilers do), and :func:`capture` records launches the way a CUDA graph does, to
replay them later with the argument values of the capture.
"""

from __future__ import annotations

import contextlib
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
#: Order in which a launch runs its (block, thread) pairs: 0 in order, else shuffled with this seed.
ORDER_SEED = 0
#: Extra g++ flags for the host kernels built from now on (a test sets ("-mfma", "-ffp-contract=fast")).
EXTRA_FLAGS: tuple[str, ...] = ()


def compiler() -> str | None:
    return shutil.which("g++")


class HostKernel:
    """Callable like loopkit's driver kernel: ``kernel(grid=, block=, args=, stream=)``, checking ``args`` against
    the kernel's C signature (count, pointer (a tensor or None) or int, and no python float, which would reach the
    kernel as a double). While a :func:`capture` is open it records launches instead of running them."""

    recording: HostGraph | None = None

    def __init__(self, library: ctypes.CDLL, name: str) -> None:
        self.name = name
        self._launch = getattr(library, f"launch_{name}")
        self._launch.argtypes = [
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_ulonglong,
            ctypes.POINTER(ctypes.c_ulonglong),
        ]
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
            if isinstance(arg, torch.Tensor) or arg is None:
                if not ctype.endswith("*"):
                    raise TypeError(f"{self.name} argument {position} is {ctype}, got {type(arg).__name__}")
                if arg is not None and arg.device.type != "cpu":
                    raise TypeError(f"{self.name} argument {position}: host kernels take CPU tensors")
                keep.append(ctypes.c_void_p(None if arg is None else arg.data_ptr()))
            elif isinstance(arg, int) and not isinstance(arg, bool):
                if ctype != "int":
                    raise TypeError(f"{self.name} argument {position} is {ctype}, got the python int {arg}")
                keep.append(ctypes.c_int(arg))
            else:
                raise TypeError(f"{self.name} argument {position} is {ctype}, got {arg!r} ({type(arg).__name__})")
        if HostKernel.recording is not None:  # a CUDA graph keeps a kernel's argument values, not their source
            HostKernel.recording.launches.append((self, grid[0], block[0], keep))
        else:
            self.run(grid[0], block[0], keep)

    def run(self, grid: int, block: int, keep: list) -> None:
        pointers = (ctypes.c_void_p * len(keep))(*(ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep))
        misaligned = self._misaligned()
        address = ctypes.c_ulonglong()
        if self._launch(grid, block, pointers, ORDER_SEED, ctypes.byref(address)):
            near = " (near null: a null pointer taken from a table)" if address.value < 65536 else ""
            raise RuntimeError(f"{self.name} faulted at address {address.value:#x}{near}; on a GPU: illegal address")
        if self._misaligned() != misaligned:
            raise RuntimeError(
                f"{self.name} made {self._misaligned() - misaligned} misaligned vector accesses, which fault on a GPU"
            )


class HostGraph:
    """The launches recorded by :func:`capture`, with their argument values; ``replay()`` runs them again."""

    def __init__(self) -> None:
        self.launches: list[tuple[HostKernel, int, int, list]] = []

    def replay(self) -> None:
        for kernel, grid, block, keep in self.launches:
            kernel.run(grid, block, keep)


@contextlib.contextmanager
def capture(monkeypatch):
    """Record the kernel launches made inside (as ``torch.cuda.graph`` does), with ``_cuda.capturing()`` true.
    Only kernels are recorded: torch operations inside (AdamW's step counts) run once, now."""
    graph = HostGraph()
    monkeypatch.setattr(_cuda, "capturing", lambda: True)
    HostKernel.recording = graph
    try:
        yield graph
    finally:
        HostKernel.recording = None
        monkeypatch.setattr(_cuda, "capturing", lambda: False)


def host_kernel(name: str, dtype: torch.dtype, device_index: int = 0, options: tuple[str, ...] = ()) -> HostKernel:
    """Same signature as ``loopkit.optim._cuda.compiled``; compiles once per source, dtype, options and
    :data:`EXTRA_FLAGS`."""
    return _host_kernel(name, dtype, tuple(options), EXTRA_FLAGS)


@functools.cache
def _host_kernel(name: str, dtype: torch.dtype, options: tuple[str, ...], extra: tuple[str, ...]) -> HostKernel:
    text = (
        PRELUDE.read_text()
        + _cuda.source(name.removesuffix("_step"))
        + f'\nextern "C" int launch_{name}(unsigned grid, unsigned block, void** args, unsigned long long seed,'
        f" unsigned long long* fault) {{ return loopkit_launch({name}, grid, block, args, seed, fault); }}"
        + f'\nextern "C" const char* signature_{name}() {{ return loopkit_signature({name}); }}'
        + '\nextern "C" unsigned long long vector_accesses() { return loopkit_vector_accesses; }'
        + '\nextern "C" unsigned long long misaligned_accesses() { return loopkit_misaligned; }\n'
    )
    flags = [f"-DPARAM_KIND={_cuda.PARAM_KINDS[dtype]}", *options, *extra]
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
    monkeypatch.setattr(_base.FusedOptimizer, "_runs_kernels", staticmethod(lambda device: True))
    monkeypatch.setattr(_cuda, "compiled", host_kernel)
