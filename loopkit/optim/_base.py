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
    #: What each column of the pointer table holds, for error messages.
    column_names: tuple[str, ...] = ()
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
        self._hyper: dict[torch.device, torch.Tensor] = {}
        self._forget_launches()

    def _forget_launches(self) -> None:
        """Drop the cached tables (and what subclasses keep with them): loaded state lives at new addresses."""
        self._cache: dict[Any, Any] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's, except that state stays float32 and step counts live on the parameter's device.

        torch casts every floating-point state tensor to its parameter's dtype on load; for a bfloat16 model that
        would round the float32 moments and break an exact resume, so the saved values are taken as they are.
        """
        for saved in state_dict["param_groups"]:  # checked before anything is touched
            group = {key: value for key, value in saved.items() if key not in IMPLEMENTATION_KEYS}
            self._check_group({**self.defaults, **group})
        super().load_state_dict(state_dict)
        self._forget_launches()
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
    #: torch.amp.GradScaler's contract for fused optimizers: instead of reading the inf flag on the host (a sync)
    #: and skipping step(), it sets ``self.grad_scale`` and ``self.found_inf`` (device tensors) and calls step(),
    #: which unscales and skips on the device.
    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step for every parameter with a gradient: one kernel launch per device and dtype, the reference
        implementation for parameters off CUDA. Under ``GradScaler.step(optimizer)`` the gradients are unscaled and
        the step skipped (parameters, state and step counts unchanged) on the device, without a host sync."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check_group(group)  # a schedule may have moved a value out of range
        parts = self._partition()
        if not parts:
            return loss
        capturing = _cuda.capturing()
        for device in dict.fromkeys(device for device, _ in parts if self._runs_kernels(device)):
            if not capturing:  # a captured step reads the table that upload_hyperparameters() refreshes
                self._upload(device)
        scaling = AmpScaling(getattr(self, "grad_scale", None), getattr(self, "found_inf", None))
        for (device, dtype), items in parts.items():
            if self._runs_kernels(device):
                self._launch(device, dtype, items, scaling.on(device))
            else:
                warn_reference_once(type(self).__name__)
                self._reference_step(items, *scaling.on(device))
        return loss

    def _partition(self) -> dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]]:
        """The parameters with a gradient, as (group index, parameter), by device and dtype (one launch each)."""
        parts: dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:  # zero-size tensors get state (as in torch) and no chunk
                    continue
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
                parts.setdefault((p.device, p.dtype), []).append((gi, p))
        return parts

    @staticmethod
    def _runs_kernels(device: torch.device) -> bool:
        """Whether parameters on this device step with the fused kernels (else the reference). The tests override
        it to run the kernel sources on the host (``tests/cuda_on_host.py``)."""
        return device.type == "cuda"

    def upload_hyperparameters(self, device: torch.device | None = None) -> None:
        """Send every group's current values to the device table (of ``device``, or of every device holding
        parameters), without a host sync: before each replay of a CUDA graph that captured :meth:`launch` or
        :meth:`step`.

        Raises:
            RuntimeError: a value the captured launch cannot honour (FusedSGD: momentum turned on for parameters
                that had no momentum buffer when the launch was captured).
        """
        self._check_replayable()
        devices = [device] if device is not None else self._kernel_devices()
        for d in devices:
            self._upload(torch.device(d))

    def _kernel_devices(self) -> list[torch.device]:
        found = {p.device: None for group in self.param_groups for p in group["params"]}
        return [d for d in found if self._runs_kernels(d)]

    def _upload(self, device: torch.device) -> None:
        rows = [self._hyper_row(group) for group in self.param_groups]
        fresh = _cuda.device_table(rows, device, torch.float32)
        current = self._hyper.get(device)
        if current is None or current.shape != fresh.shape:
            self._hyper[device] = fresh
        else:
            current.copy_(fresh)  # same storage: a captured graph's kernels read it

    def _check_replayable(self) -> None:
        """Raise if the cached launches (what a CUDA graph may have captured) cannot honour the current values."""

    def launch(self) -> None:
        """Launch the kernels for the current gradients, one launch per device and dtype, with the hyperparameters
        last uploaded; CUDA-graph capturable once warmed up (docs/optim.md): it then builds and uploads nothing."""
        for (device, dtype), items in self._partition().items():
            if self._runs_kernels(device):
                self._launch(device, dtype, items, (None, None))

    def _launch(
        self,
        device: torch.device,
        dtype: torch.dtype,
        items: list[tuple[int, torch.Tensor]],
        scaling: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> None:
        raise NotImplementedError

    def _tables(
        self, slot: Any, items: list[tuple[int, torch.Tensor]], columns: Sequence[Sequence[torch.Tensor | None]]
    ) -> tuple[_cuda.Tables, bool]:
        """The pointer, size, group and chunk tables for ``columns`` (param, grad, state... per tensor of ``items``),
        and whether they were built now. Cached under ``slot`` (device and dtype) and rebuilt only when an address or
        the chunk size changed, so a steady step uploads nothing but hyperparameters."""
        key = (self.chunk_size, *map(_cuda.addresses, columns))
        cached = self._cache.get(slot)
        if cached is not None and cached[0] == key:
            return cached[1], False
        name = type(self).__name__
        if _cuda.capturing():
            raise RuntimeError(
                f"{name}: tensors were allocated or moved while a CUDA graph was being captured (new gradients, say, "
                "when they were set to None before capture), so the kernels' tables would be built and uploaded "
                "inside the capture. Warm up so that every tensor exists before capturing, and keep the gradients "
                "allocated: optimizer.zero_grad(set_to_none=False) (docs/optim.md, CUDA graphs)"
            )
        self._check_layout(columns[: self.elementwise_columns])
        self._check_devices(slot[0], columns)
        built = _cuda.tables(columns, [gi for gi, _ in items], self.chunk_size)
        self._cache[slot] = (key, built)
        return built, True

    def _run_kernel(
        self, device: torch.device, dtype: torch.dtype, tables: _cuda.Tables, pointers: list, n_tensors: int
    ) -> None:
        hyper = self._hyper.get(device)
        if hyper is None:
            raise RuntimeError(
                f"{type(self).__name__}.launch(): no hyperparameters on {device} yet; call step() once, or "
                "upload_hyperparameters(), first"
            )
        kernel = _cuda.compiled(self.kernel_name, dtype, device.index or 0, tuple(self.kernel_options))
        _cuda.launch(kernel, tables, hyper, pointers, n_tensors, device)

    def _check_devices(self, device: torch.device, columns: Sequence[Sequence[torch.Tensor | None]]) -> None:
        """Every tensor of a launch on its device: a CPU tensor's address (state made before ``model.cuda()``, say)
        or another GPU's would be read as this device's memory. Checked when the tables are built."""
        for name, column in zip(self.column_names, columns):
            for p, t in zip(cast("Sequence[torch.Tensor]", columns[0]), column):
                if t is not None and t.device != device:
                    raise RuntimeError(
                        f"{type(self).__name__}: the {name} of a parameter of shape {tuple(p.shape)} on {device} "
                        f"is on {t.device}; optimizer state must live on its parameter's device (was the "
                        "optimizer stepped or its state loaded before the model moved? load_state_dict() after "
                        "moving the model puts the state on each parameter's device)"
                    )

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

    def _reference_step(
        self, items: list[tuple[int, torch.Tensor]], grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None
    ) -> None:
        raise NotImplementedError


class AmpScaling:
    """GradScaler's ``grad_scale`` and ``found_inf`` (float32 tensors of one element, or None), moved once per
    step to each device that needs them, without a sync, as torch's fused optimizers do."""

    def __init__(self, grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> None:
        for name, t in (("grad_scale", grad_scale), ("found_inf", found_inf)):
            if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.numel() != 1):
                raise TypeError(f"{name} must be a float32 tensor of one element (GradScaler's), got {t!r}")
        self.values = (grad_scale, found_inf)
        self._moved: dict[torch.device, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if device not in self._moved:
            self._moved[device] = tuple(  # type: ignore[assignment]
                None if t is None else t.to(device, non_blocking=True).reshape(()).contiguous() for t in self.values
            )
        return self._moved[device]


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, for a parameter already known to have one (the steps only see those)."""
    return cast(torch.Tensor, p.grad)


def with_items_by_group(
    items: list[tuple[int, torch.Tensor]],
) -> dict[int, list[torch.Tensor]]:
    """The parameters of ``items`` by group index, in order: the reference implementations step one group at a time."""
    by_group: dict[int, list[torch.Tensor]] = {}
    for gi, p in items:
        by_group.setdefault(gi, []).append(p)
    return by_group
