"""FusedSGD: SGD with momentum in one kernel launch per parameter dtype, hyperparameters read from device memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._base import FusedOptimizer, check_flag, check_implementation, check_number
from ._reference import sgd_reference


class FusedSGD(FusedOptimizer):
    """SGD with momentum, dampening, Nesterov and weight decay, with torch.optim.SGD's semantics.

    Accepts torch.optim.SGD's arguments: ``maximize`` is implemented; ``differentiable=True`` is refused (use
    ``torch.optim.SGD``); ``foreach`` and ``fused`` choose torch's implementation, and only the values that
    describe this one (fused) are accepted. The momentum buffer is float32 whatever the parameter dtype; the state_dict uses torch's key
    (``momentum_buffer``). On a machine without CUDA the reference implementation runs (one warning).
    """

    kernel_name = "sgd_step"
    elementwise_columns = 3

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_implementation("FusedSGD", foreach, fused, False)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        if differentiable:
            defaults["differentiable"] = differentiable  # refused by _check_group, with the way out
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        if group.get("differentiable", False) is not False:
            raise ValueError(
                f"FusedSGD cannot differentiate through its step (got differentiable={group['differentiable']!r}):"
                " use torch.optim.SGD(..., differentiable=True)"
            )
        check_flag("nesterov", group["nesterov"])
        check_flag("maximize", group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"Nesterov momentum needs momentum > 0 and dampening = 0, got momentum={group['momentum']!r}, "
                f"dampening={group['dampening']!r}"
            )
        check_number("lr", group["lr"])
        check_number("momentum", group["momentum"])
        check_number("dampening", group["dampening"], 0.0, 1.0)
        check_number("weight_decay", group["weight_decay"])

    def _hyper_row(self, group: dict[str, Any]) -> list[float]:
        return [
            group["lr"],
            group["momentum"],
            1 - group["dampening"],
            group["weight_decay"],
            float(group["nesterov"]),
            -1.0 if group["maximize"] else 1.0,
        ]

    def _reference_step(self) -> None:
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state[p].get("momentum_buffer") for p in live]
            new = sgd_reference(
                live,
                [p.grad for p in live],
                buffers,
                lr=group["lr"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
            )
            for p, buf in zip(live, new):
                if buf is not None:
                    self.state[p]["momentum_buffer"] = buf

    def _launch_dtype(self, dtype: torch.dtype, items: list[tuple[int, torch.Tensor]]) -> None:
        # As in torch, a buffer exists once a step ran with momentum; its first step sets buf = d_p, undampened,
        # so new buffers get their own launch. A group with momentum 0 needs none (the kernel skips it).
        fresh, steady = [], []
        for gi, p in items:
            if self.param_groups[gi]["momentum"] != 0 and "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
                fresh.append((gi, p))
            else:
                steady.append((gi, p))
        for part, first in ((steady, 0), (fresh, 1)):
            if part:
                columns: list[Sequence[torch.Tensor | None]] = [
                    [p for _, p in part],
                    [p.grad for _, p in part],
                    [self.state[p].get("momentum_buffer") for _, p in part],
                ]
                self._run_kernel((dtype, first), part, columns, first)
