"""GradientClip: clip gradients by their global norm or by value, before the optimizer step.

The callback supplies the step's clipping policy, ``learner.clip_gradients``; the step
(:mod:`loopkit.loop.train_step`) calls it once the window's gradient is complete and unscaled, just before
``before_step``, so the threshold applies to the true gradient. The threshold is a
:class:`ClipThreshold` hyperparameter a :class:`~loopkit.scheduling.scheduler.Scheduler` can move like a
learning rate.

The pre-clip global norm of every step is kept on the device in :attr:`GradientClip.norm` (norm mode), so a
logger can read it without a host sync per step (torch's ``clip_grad_norm_`` computes it anyway).

Example:
    >>> import torch
    >>> from loopkit import Learner, Scheduler, Schedule
    >>> model = torch.nn.Linear(2, 1)
    >>> data = [(torch.randn(4, 2), torch.randn(4, 1))] * 4
    >>> clip = GradientClip(max_norm=1.0)
    >>> sched = Scheduler({ClipThreshold: Schedule([0, 1], [1.0, 0.1])})   # tighten the clip over the epoch
    >>> _ = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
    ...             callbacks=[clip, sched]).fit(1)
    >>> round(clip.max_norm, 3)
    0.325
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..loop.callback import Callback
from ..resume.model import unwrap_model
from ..scheduling.hyperparams import Domain, HyperParameter


class GradientClip(Callback):
    """Clip gradients by global norm (``max_norm``) or elementwise (``max_value``), one of the two.

    Args:
        max_norm: scale all gradients down together so that their global ``norm_type``-norm is at most this.
        max_value: clamp every gradient element to ``[-max_value, max_value]``.
        norm_type: the norm for ``max_norm`` (2.0 default; ``float("inf")`` for the max-abs norm).
        parameters: the names (as in ``model.named_parameters()``) of the parameters to clip, in the order
            their norm is summed; default: the optimizer's parameters in ``model.parameters()`` order (then any
            it holds outside the model, a loss's), the order a hand-written ``clip_grad_norm_(model.parameters(),
            ...)`` sums in, so the norm matches it to the last bit.

    Attributes:
        norm: the pre-clip global norm of the latest step, a 0-d tensor on the gradients' device (norm mode;
            None before the first step and in value mode).

    Raises:
        ValueError: not exactly one of ``max_norm`` and ``max_value``, either not a positive number, or a
            ``norm_type`` that is not a positive number or ``float("inf")``; when the Learner is built, a name in
            ``parameters`` that is not one of the model's parameters.
    """

    agrees_across_ranks = True  # clips gradients DDP has already averaged

    reads = ("optimizer",)
    writes = ("clip_gradients",)

    def __init__(
        self,
        max_norm: float | None = None,
        *,
        max_value: float | None = None,
        norm_type: float = 2.0,
        parameters: Sequence[str] | None = None,
    ):
        if (max_norm is None) == (max_value is None):
            raise ValueError(
                f"GradientClip needs exactly one of max_norm or max_value, got max_norm={max_norm!r}, "
                f"max_value={max_value!r}"
            )
        for name, value in (("max_norm", max_norm), ("max_value", max_value)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"GradientClip({name}={value!r}) needs a positive number")
        if not isinstance(norm_type, (int, float)) or not (norm_type > 0 or math.isinf(norm_type)):
            raise ValueError(f"GradientClip(norm_type={norm_type!r}) needs a positive number or float('inf')")
        self.max_norm = None if max_norm is None else float(max_norm)
        self.max_value = None if max_value is None else float(max_value)
        self.norm_type = float(norm_type)
        if parameters is not None and (isinstance(parameters, str) or not all(isinstance(n, str) for n in parameters)):
            raise ValueError(f"GradientClip(parameters={parameters!r}) needs a list of parameter names")
        self.parameters = None if parameters is None else list(parameters)
        self.norm: torch.Tensor | None = None
        self._params: list[torch.Tensor] = []
        self._groups = -1  # the number of optimizer parameters the default order was laid out for

    def __repr__(self) -> str:
        if self.max_norm is not None:
            return f"GradientClip(max_norm={self.max_norm:g})"
        return f"GradientClip(max_value={self.max_value:g})"

    @property
    def threshold(self) -> float:
        """The active threshold: ``max_norm`` or ``max_value``; what :class:`ClipThreshold` schedules."""
        return self.max_norm if self.max_norm is not None else self.max_value  # type: ignore[return-value]

    @threshold.setter
    def threshold(self, value: float) -> None:
        if self.max_norm is not None:
            self.max_norm = value
        else:
            self.max_value = value

    def check(self, learner: Any) -> None:
        if self.parameters is None:
            return
        named = dict(unwrap_model(learner.model).named_parameters())
        unknown = [n for n in self.parameters if n not in named]
        if unknown:
            raise ValueError(
                f"GradientClip(parameters=...) names {unknown[:3]}, which are not parameters of the model; use "
                f"names from model.named_parameters(), such as {list(named)[:3]}"
            )
        self._params = [named[n] for n in self.parameters]

    def before_fit(self, learner: Any) -> None:
        self.norm = None
        self._groups = -1
        if self.parameters is not None:
            self.check(learner)  # the model's own parameters (lr_find clips a copy of this callback)
        learner.clip_gradients = self.clip

    def _default_order(self, learner: Any) -> list[torch.Tensor]:
        """The optimizer's parameters in ``model.parameters()`` order, then those it holds outside the model."""
        groups = learner.optimizer.param_groups
        size = sum(len(group["params"]) for group in groups)
        if size != self._groups:  # laid out again when parameters join the optimizer mid-run
            held = {id(p): p for group in groups for p in group["params"]}
            in_model = [p for p in learner.model.parameters() if id(p) in held]
            seen = {id(p) for p in in_model}
            self._params = in_model + [p for p in held.values() if id(p) not in seen]
            self._groups = size
        return self._params

    def clip(self, learner: Any) -> None:
        """Clip ``learner``'s gradients in place (the step calls it once the gradient is complete)."""
        order = self._params if self.parameters is not None else self._default_order(learner)
        params = [p for p in order if p.grad is not None]
        if not params:
            return
        if self.max_norm is not None:
            self.norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        elif self.max_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.max_value)


class ClipThreshold(HyperParameter):
    """The threshold of the Learner's :class:`GradientClip` (its ``max_norm`` or ``max_value``), schedulable."""

    writes = ("callbacks.GradientClip",)
    # Checked by the Scheduler on the whole schedule before training, not mid-run in set.
    domain = Domain(0.0, low_open=True, why="a clipping threshold must be positive")

    @property
    def name(self) -> str:
        return "clip"

    def check(self, learner: Any) -> None:
        if not any(isinstance(cb, GradientClip) for cb in learner.callbacks):
            raise ValueError("ClipThreshold is scheduled but the Learner has no GradientClip callback; add one")

    def bind(self, learner: Any) -> None:
        self._clip = next(cb for cb in learner.callbacks if isinstance(cb, GradientClip))

    def set(self, learner: Any, value: float) -> None:
        if not value > 0:
            raise ValueError(f"ClipThreshold: the schedule gave {value!r}; a clipping threshold must be positive")
        self._clip.threshold = float(value)

    def get(self, learner: Any) -> float:
        return self._clip.threshold
