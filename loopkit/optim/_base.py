"""What the fused optimizers share: validation, the reference/CUDA dispatch, device-resident hyperparameters.

Device-resident hyperparameters. loopkit's hyperparameters (and any user) write python floats into
``param_groups`` as for any torch optimizer. At each ``step()`` the optimizer packs every group's values into a
fresh pinned host tensor and copies it, non-blocking, into a float32 table on the device; the kernels read the
table. torch's caching host allocator keeps a pinned block alive until the copy that used it has run, so no
host-device sync is ever needed, and a schedule that moves every step costs one small asynchronous copy.
For CUDA graphs, :meth:`upload_hyperparameters` (outside the graph) and :meth:`launch` (captured) are separate:
the graph's kernels read the table, which the host refreshes before each replay.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch

from . import _cuda

_warned_cpu = False


def warn_reference_once(name: str) -> None:
    global _warned_cpu
    if not _warned_cpu:
        _warned_cpu = True
        warnings.warn(
            f"{name}: parameters are not on a CUDA device, so the reference implementation runs (correct, not fused)",
            RuntimeWarning,
            stacklevel=3,
        )


def check_number(name: str, value: Any, low: float = 0.0, high: float | None = None, high_open: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value
        or value < low
        or (high is not None and (value >= high if high_open else value > high))
    ):
        bound = "" if high is None else (f" and below {high}" if high_open else f" and at most {high}")
        raise ValueError(f"invalid {name}={value!r}: must be a number >= {low}{bound}")


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"invalid {name}={value!r}: must be True or False")


def check_implementation(name: str, foreach: Any, fused: Any, capturable: Any) -> None:
    """torch's implementation selectors. They choose how torch computes a step, not what it computes; this class
    is always fused and always capturable (step counts and hyperparameters live on the device), so it accepts the
    values that ask for that and refuses the ones that ask for something else."""
    if foreach not in (None, False):
        raise ValueError(f"{name} is a fused optimizer, got foreach={foreach!r}: leave foreach unset")
    if fused not in (None, True):
        raise ValueError(f"{name} is a fused optimizer, got fused={fused!r}: use torch.optim for the unfused step")
    check_flag("capturable", capturable)


#: torch.optim's implementation selectors, dropped from loaded param groups (they describe the saving optimizer).
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")
VECTOR = 4  # elements per vector access in the kernels (VEC in kernels/common.cuh)


class FusedOptimizer(torch.optim.Optimizer):
    """Base class: subclasses define the kernel, the hyperparameter row, the state and the reference step."""

    kernel_name = ""
    #: Leading columns of the pointer table that hold one element per parameter element (param, grad, state).
    elementwise_columns = 0
    #: Extra NVRTC flags (``("-DILP=4",)``). A tuning knob like :attr:`chunk_size`: set it on an instance before
    #: its first step; benchmarks/bench_optim.py's sweep times the alternatives (docs/optim.md).
    kernel_options: tuple[str, ...] = ()
    _chunk_size = 65536

    @property
    def chunk_size(self) -> int:
        """Elements per thread block (65,536 by default): a positive multiple of 4 up to 2**30, so that every chunk
        of an aligned tensor starts 16-byte aligned and takes the vector path."""
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**30 or value % VECTOR:
            raise ValueError(
                f"invalid chunk_size={value!r}: must be a positive multiple of {VECTOR} up to 2**30 (a chunk that "
                "is not a multiple of 4 elements long starts misaligned and loses the vector path)"
            )
        self._chunk_size = value

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._check_group(group)
            for p in group["params"]:
                if p.is_complex():
                    raise TypeError(
                        f"{type(self).__name__} does not support complex parameters (got {p.dtype}, "
                        f"shape {tuple(p.shape)}); view them as real with torch.view_as_real"
                    )
                if p.dtype not in _cuda.PARAM_KINDS:
                    raise TypeError(
                        f"{type(self).__name__} supports float32, bfloat16 and float16 parameters, "
                        f"got {p.dtype} (shape {tuple(p.shape)})"
                    )
        self._cache: dict[Any, Any] = {}
        self._hyper: torch.Tensor | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's, except that state stays float32 and step counts live on the parameter's device.

        torch casts every floating-point state tensor to its parameter's dtype on load; for a bfloat16 model that
        would round the float32 moments and break an exact resume, so the saved values are taken as they are.
        """
        for saved in state_dict["param_groups"]:  # checked before anything is touched
            group = {key: value for key, value in saved.items() if key not in IMPLEMENTATION_KEYS}
            self._check_group({**self.defaults, **group})
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key in IMPLEMENTATION_KEYS:
                group.pop(key, None)
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in zip(saved_ids, params):
            saved = state_dict["state"].get(i)
            if saved:
                self.state[p] = {
                    key: torch.as_tensor(value).detach().to(p.device, torch.float32, copy=True)
                    for key, value in saved.items()
                    if value is not None
                }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def _check_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _hyper_row(self, group: dict[str, Any]) -> list[float]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check_group(group)  # a schedule may have moved a value out of range
        live = [(gi, p) for gi, group in enumerate(self.param_groups) for p in group["params"] if p.grad is not None]
        for _, p in live:
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients (parameter of shape "
                    f"{tuple(p.shape)}); use torch.optim.SparseAdam for sparse embeddings"
                )
            if p.grad.dtype != p.dtype or p.grad.device != p.device:
                raise RuntimeError(
                    f"{type(self).__name__}: a gradient of {p.grad.dtype} on {p.grad.device} for a "
                    f"parameter of {p.dtype} on {p.device} (shape {tuple(p.shape)}); gradients must "
                    "match their parameter's dtype and device"
                )
        if not live:
            return loss
        if self._runs_kernels(live[0][1]):
            self.upload_hyperparameters(live[0][1].device)
            self.launch()
        else:
            warn_reference_once(type(self).__name__)
            self._reference_step()
        return loss

    @staticmethod
    def _runs_kernels(p: torch.Tensor) -> bool:
        """Whether this parameter's step runs the fused kernels (else the reference). The tests override it to
        run the kernel sources on the host (``tests/cuda_on_host.py``)."""
        return p.is_cuda

    def upload_hyperparameters(self, device: torch.device | None = None) -> None:
        """Send every group's current values to the device table, without a host sync."""
        if device is None:
            device = next(p.device for g in self.param_groups for p in g["params"])
        rows = [self._hyper_row(group) for group in self.param_groups]
        fresh = _cuda.device_table(rows, device, torch.float32)
        if self._hyper is None or self._hyper.shape != fresh.shape or self._hyper.device != fresh.device:
            self._hyper = fresh
        else:
            self._hyper.copy_(fresh)  # same storage: a captured graph's kernels read it

    def launch(self) -> None:
        """Launch the kernels for the current gradients (one launch per parameter dtype); CUDA-graph capturable."""
        by_dtype: dict[torch.dtype, list[tuple[int, torch.Tensor]]] = {}
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is not None:  # zero-size tensors get state (as in torch) and no chunk
                    by_dtype.setdefault(p.dtype, []).append((gi, p))
        for dtype, items in by_dtype.items():
            self._launch_dtype(dtype, items)

    def _launch_dtype(self, dtype: torch.dtype, items: list[tuple[int, torch.Tensor]]) -> None:
        raise NotImplementedError

    def _run_kernel(
        self,
        slot: Any,
        items: list[tuple[int, torch.Tensor]],
        columns: Sequence[Sequence[torch.Tensor | None]],
        *extra: int,
    ) -> None:
        """Launch this optimizer's kernel over ``columns`` (param, grad, state... per tensor of ``items``).

        The pointer, size, group and chunk tables are cached under ``slot`` (the launch's dtype, say) and rebuilt
        only when an address or the chunk size changed, so a steady step uploads nothing but hyperparameters.
        """
        key = (self.chunk_size, *map(_cuda.addresses, columns))
        cached = self._cache.get(slot)
        if cached is None or cached[0] != key:
            self._check_layout(columns[: self.elementwise_columns])
            cached = self._cache[slot] = (key, _cuda.tables(columns, [gi for gi, _ in items], self.chunk_size))
        if self._hyper is None:
            raise RuntimeError(
                f"{type(self).__name__}.launch() needs the hyperparameter table on the device: call "
                "upload_hyperparameters() first (step() does both)"
            )
        p = items[0][1]
        kernel = _cuda.compiled(self.kernel_name, p.dtype, p.device.index or 0, tuple(self.kernel_options))
        _cuda.launch(kernel, cached[1], self._hyper, len(items), *extra)

    def _check_layout(self, columns: Sequence[Sequence[torch.Tensor | None]]) -> None:
        """The kernels walk each tensor's memory as a flat array: every parameter must be dense, and its gradient
        and float32 state laid out the same way. Checked when the tables are built, i.e. when an address changes."""
        name = type(self).__name__
        for row in zip(*columns):
            p = cast(torch.Tensor, row[0])  # column 0 holds the parameters: never None
            if not (
                p.is_contiguous()
                or p.is_contiguous(memory_format=torch.channels_last)
                or p.is_contiguous(memory_format=torch.channels_last_3d)
            ):
                raise RuntimeError(
                    f"{name} needs dense parameters; one of shape {tuple(p.shape)} has strides "
                    f"{p.stride()}: make it contiguous before creating the optimizer"
                )
            for t in row[1:]:
                if t is not None and (t.stride() != p.stride() or t.shape != p.shape):
                    raise RuntimeError(
                        f"{name}: a gradient or state tensor of shape {tuple(t.shape)} and strides "
                        f"{t.stride()} for a parameter of shape {tuple(p.shape)} and strides "
                        f"{p.stride()}; they must match (assign gradients laid out like the parameter)"
                    )
            for t in row[2:]:
                if t is not None and t.dtype != torch.float32:
                    raise RuntimeError(
                        f"{name}: optimizer state must be float32, found {t.dtype} for a parameter "
                        f"of shape {tuple(p.shape)}; was the state edited by hand?"
                    )

    def _reference_step(self) -> None:
        raise NotImplementedError
