"""MixedPrecision: run forward and loss under ``torch.autocast`` (bfloat16 or float16), on CPU or CUDA.

The callback supplies the step's precision policy as learner state (:mod:`loopkit.loop.train_step` owns the
step): ``learner.autocast``, the autocast context the loop enters lexically around forward, ``after_pred`` and
loss, in training, validation, ``validate`` and ``predict`` alike; and with float16 ``learner.grad_scaler``, a
``torch.amp.GradScaler`` the step uses as torch's own recipe does (``scaler.scale(loss).backward();
scaler.unscale_(opt); clip; scaler.step(opt); scaler.update()``). A step whose gradients are not finite is
skipped (``CancelStep``): ``global_step`` does not advance, schedules evaluate at the steps that happened, and
nothing is logged for it. The skip is read from the public scale (it backs off exactly when a step is skipped).

``learner.loss`` (what Metrics, TensorBoard and the progress bar read) is always the true, unscaled loss. The
scaler's state is this callback's ``state_dict``, so checkpoints carry it and a resume is exact.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..loop.callback import Callback

_DTYPES = (torch.bfloat16, torch.float16)


class MixedPrecision(Callback):
    """Autocast forward and loss to ``dtype``; with float16, scale the loss with a GradScaler.

    Args:
        dtype: ``torch.bfloat16`` (default) or ``torch.float16``.
        device_type: ``"cpu"`` or ``"cuda"``; default: the device of the model's first parameter.
        init_scale: the GradScaler's initial scale (float16 only; torch's default).
        growth_factor: the GradScaler's growth factor (float16 only; torch's default).
        backoff_factor: the GradScaler's backoff factor (float16 only; torch's default).
        growth_interval: the GradScaler's growth interval, in steps (float16 only; torch's default).

    Attributes:
        scaler: the ``torch.amp.GradScaler`` (float16), else None.
        skipped: optimizer steps skipped this fit because the gradients were not finite.

    Raises:
        ValueError: at construction, a ``dtype`` other than bfloat16 or float16, an unknown ``device_type``,
            ``device_type="cuda"`` without CUDA, a ``backoff_factor`` outside (0, 1) or a ``growth_factor`` <= 1; on resume, a state saved with the other dtype's scaler.
    """

    agrees_across_ranks = True  # its scaler skips a step on gradients DDP has already averaged

    reads = ("model",)
    writes = ("autocast", "grad_scaler", "skipped_by_scaler")

    def __init__(
        self,
        dtype: torch.dtype = torch.bfloat16,
        *,
        device_type: str | None = None,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"MixedPrecision(dtype={dtype!r}): use torch.bfloat16 or torch.float16")
        if device_type not in (None, "cpu", "cuda"):
            raise ValueError(f"MixedPrecision(device_type={device_type!r}): use 'cpu', 'cuda' or None (the model's)")
        if not 0 < backoff_factor < 1 or not growth_factor > 1:
            raise ValueError(
                f"MixedPrecision needs 0 < backoff_factor < 1 and growth_factor > 1 (a skipped step is read from the "
                f"scale backing off), got backoff_factor={backoff_factor!r}, growth_factor={growth_factor!r}"
            )
        self.dtype, self.device_type = dtype, device_type
        self._scaler_options = (float(init_scale), float(growth_factor), float(backoff_factor), int(growth_interval))
        self.scaler: torch.amp.GradScaler | None = None
        # The learner of the latest fit, weakly: its skip count is this callback's state, and a deep copy of the
        # callback (lr_find's) must not copy the learner.
        self._learner: Any = lambda: None
        self._skipped = 0

    def __repr__(self) -> str:
        return f"MixedPrecision({self.dtype})"

    @property
    def skipped(self) -> int:
        """Optimizer steps this callback's scaler skipped in the latest fit (non-finite gradients)."""
        learner = self._learner()
        return learner.skipped_by_scaler if learner is not None else self._skipped

    def check(self, learner: Any) -> None:
        device = self._device(learner)
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("MixedPrecision(device_type='cuda') but CUDA is not available on this machine")
        learner.autocast = torch.autocast(device_type=device, dtype=self.dtype)  # validate/predict before a fit

    def _device(self, learner: Any) -> str:
        if self.device_type is not None:
            return self.device_type
        param = next(learner.model.parameters(), None)
        return "cpu" if param is None else param.device.type

    def before_fit(self, learner: Any) -> None:
        device = self._device(learner)
        learner.autocast = torch.autocast(device_type=device, dtype=self.dtype)
        learner.skipped_by_scaler = 0
        self._learner = weakref.ref(learner)
        if self.dtype == torch.float16:
            init_scale, growth_factor, backoff_factor, growth_interval = self._scaler_options
            self.scaler = torch.amp.GradScaler(
                device,
                init_scale=init_scale,
                growth_factor=growth_factor,
                backoff_factor=backoff_factor,
                growth_interval=growth_interval,
            )
        learner.grad_scaler = self.scaler

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["scaler"] is None) != (self.scaler is None):
            raise ValueError(
                f"MixedPrecision({self.dtype}) cannot take a state written with"
                f"{'out' if state['scaler'] is None else ''} a GradScaler; resume with the run's dtype"
            )
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self._skipped = state["skipped"]
        learner = self._learner()
        if learner is not None:
            learner.skipped_by_scaler = state["skipped"]
