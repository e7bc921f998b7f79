"""MixedPrecision: run forward and loss under ``torch.autocast`` (bfloat16 or float16), on CPU or CUDA.

float16 brings a ``torch.amp.GradScaler``: the loss is scaled before backward (in ``before_backward``, on
``learner.backward_loss``), the gradients are unscaled in ``before_step`` (so :class:`GradientClip` sees true
gradients), and when they are not finite the step is skipped with ``CancelStep``: ``global_step`` does not
advance, schedules evaluate at the steps that happened, and nothing is logged for the skipped step. This is
torch's own recipe (``scaler.scale(loss).backward(); scaler.unscale_(opt); ...; scaler.step(opt);
scaler.update()``) step for step: the scaler's inf check is read on the host once per step, as
``GradScaler.step`` itself does, so noticing a skip costs nothing extra.

``learner.loss`` (what Metrics, TensorBoard and the progress bar read) is always the true, unscaled loss. The
scaler's state is this callback's ``state_dict``, so checkpoints carry it and a resume is exact.
"""

from __future__ import annotations

from typing import Any

import torch

from ..loop.callback import Callback
from ..loop.events import CancelStep

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
        ValueError: at construction, a ``dtype`` other than bfloat16 or float16, an unknown ``device_type``, or
            ``device_type="cuda"`` without CUDA; on resume, a state saved with the other dtype's scaler.
    """

    agrees_across_ranks = True  # skips a step on gradients DDP has already averaged

    reads = ("model", "optimizer", "phase")
    writes = ("backward_loss", "model.grads")
    run_after = ("GradientAccumulation",)
    run_before = ("GradientClip",)

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
        self.dtype, self.device_type = dtype, device_type
        self._scaler_options = (float(init_scale), float(growth_factor), float(backoff_factor), int(growth_interval))
        self.scaler: torch.amp.GradScaler | None = None
        self.skipped = 0
        self._autocast: Any = None
        self._pending_state: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"MixedPrecision({self.dtype})"

    def check(self, learner: Any) -> None:
        device = self._device(learner)
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("MixedPrecision(device_type='cuda') but CUDA is not available on this machine")
        self._autocast = torch.autocast(device_type=device, dtype=self.dtype)  # validate/predict before a fit

    def _device(self, learner: Any) -> str:
        if self.device_type is not None:
            return self.device_type
        param = next(learner.model.parameters(), None)
        return "cpu" if param is None else param.device.type

    def before_fit(self, learner: Any) -> None:
        device = self._device(learner)
        self._autocast = torch.autocast(device_type=device, dtype=self.dtype)
        self.skipped = 0
        if self.dtype == torch.float16:
            init_scale, growth_factor, backoff_factor, growth_interval = self._scaler_options
            self.scaler = torch.amp.GradScaler(
                device,
                init_scale=init_scale,
                growth_factor=growth_factor,
                backoff_factor=backoff_factor,
                growth_interval=growth_interval,
            )

    # The autocast region is the forward and the loss; after_batch and after_fit close it if a cancel or an
    # error skipped after_loss.
    def before_batch(self, learner: Any) -> None:
        self._autocast.__enter__()
        self._entered = True

    def after_loss(self, learner: Any) -> None:
        self._exit()

    def after_batch(self, learner: Any) -> None:
        self._exit()

    def after_fit(self, learner: Any) -> None:
        self._exit()

    def _exit(self) -> None:
        if getattr(self, "_entered", False):
            self._entered = False
            self._autocast.__exit__(None, None, None)

    def before_backward(self, learner: Any) -> None:
        if self.scaler is not None:
            learner.backward_loss = self.scaler.scale(learner.backward_loss)

    def before_step(self, learner: Any) -> None:
        scaler = self.scaler
        if scaler is None:
            return
        optimizer = learner.optimizer
        scaler.unscale_(optimizer)
        # The same host read GradScaler.step makes to decide whether to step.
        found_inf = sum(v.item() for v in scaler._found_inf_per_device(optimizer).values())
        scaler.update()  # next scale from this step's inf check (torch's order: step, then update; same result)
        if found_inf:
            self.skipped += 1
            raise CancelStep

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
        self.skipped = state["skipped"]
