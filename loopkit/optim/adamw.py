"""FusedAdamW: AdamW with one kernel launch per parameter dtype and hyperparameters read from device memory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._base import FusedOptimizer, check_flag, check_implementation, check_number, grad_of, with_items_by_group
from ._reference import adamw_reference


class FusedAdamW(FusedOptimizer):
    """AdamW (decoupled weight decay, bias correction) with torch's defaults and semantics.

    Accepts torch.optim.AdamW's arguments: ``maximize`` is implemented; ``amsgrad=True`` and
    ``differentiable=True`` are refused (use ``torch.optim.AdamW``); ``foreach``, ``fused`` and ``capturable``
    choose torch's implementation, and only the values that describe this one (fused, capturable) are accepted.
    Parameters may be float32, bfloat16 or float16; optimizer state (``exp_avg``, ``exp_avg_sq``) is float32,
    and the state_dict uses torch.optim.AdamW's keys (``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints
    move between the two. On a machine without CUDA the reference implementation runs (one warning).

    Raises:
        ValueError: at construction (and for a param group added or loaded later), an ``lr``, ``eps`` or
            ``weight_decay`` that is not a number >= 0, ``betas`` that are not two numbers in [0, 1),
            ``amsgrad=True``, ``differentiable=True``, ``foreach=True`` or ``fused=False``, or a loaded group with
            ``decoupled_weight_decay=False``.

    Source: I. Loshchilov and F. Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101; the
    reference is ``torch.optim.AdamW``, which the tests compare against step by step.

    Example:
        >>> import torch, warnings
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = FusedAdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        >>> model(torch.ones(2, 3)).sum().backward()
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     _ = opt.step()
        >>> sorted(opt.state[model.weight])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    kernel_name = "adamw_step"
    elementwise_columns = 4
    column_names = ("parameter", "gradient", "exp_avg", "exp_avg_sq", "step")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_implementation("FusedAdamW", foreach, fused, capturable)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        if differentiable:
            defaults["differentiable"] = differentiable  # refused by _check_group, with the way out
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        if group.get("amsgrad", False) is not False:
            raise ValueError(
                f"FusedAdamW does not implement amsgrad (got amsgrad={group['amsgrad']!r}): use "
                "torch.optim.AdamW(..., amsgrad=True, fused=True)"
            )
        if group.get("differentiable", False) is not False:
            raise ValueError(
                f"FusedAdamW cannot differentiate through its step (got differentiable={group['differentiable']!r}):"
                " use torch.optim.AdamW(..., differentiable=True)"
            )
        if group.get("decoupled_weight_decay", True) is not True:
            raise ValueError(
                "a param group with decoupled_weight_decay=False (torch.optim.Adam's L2 weight decay): FusedAdamW "
                "decays decoupled, as AdamW; load this state into torch.optim.Adam"
            )
        check_flag("maximize", group["maximize"])
        check_number("lr", group["lr"])
        check_number("eps", group["eps"])
        check_number("weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"invalid betas={betas!r}: give two numbers in [0, 1)")
        check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True)

    def _hyper_row(self, group: dict[str, Any]) -> list[float]:
        # Complements and logarithms are taken here, in double precision, as torch does: in float32 on the device
        # 1 - beta2 (and 1 - beta2**step at small steps) would lose about four digits when beta2 = 0.999.
        lr, (beta1, beta2) = group["lr"], group["betas"]
        return [
            lr,
            1 - lr * group["weight_decay"],
            1 - beta1,
            beta2,
            1 - beta2,
            _log(beta1),
            _log(beta2),
            group["eps"],
            -1.0 if group["maximize"] else 1.0,
        ]

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if p.is_cuda else "cpu")
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
        return state

    def _reference_step(
        self, items: list[tuple[int, torch.Tensor]], grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None
    ) -> None:
        for gi, live in with_items_by_group(items).items():
            group = self.param_groups[gi]
            states = [self._state(p) for p in live]
            if found_inf is not None and found_inf.item():  # the CPU path: reading the flag costs no device sync
                continue  # skipped: no step counted, as when GradScaler skips torch's step
            beta1, beta2 = group["betas"]
            adamw_reference(
                live,
                [grad_of(p) if grad_scale is None else grad_of(p) / grad_scale for p in live],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )

    def _launch(
        self,
        device: torch.device,
        dtype: torch.dtype,
        items: list[tuple[int, torch.Tensor]],
        scaling: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> None:
        states = [self._state(p) for _, p in items]
        steps = [s["step"] for s in states]
        columns: list[Sequence[torch.Tensor | None]] = [
            [p for _, p in items],
            [p.grad for _, p in items],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            steps,
        ]
        tables, _ = self._tables((device, dtype), items, columns)
        grad_scale, found_inf = scaling
        torch._foreach_add_(steps, 1.0)  # on the device: no sync
        self._run_kernel(device, dtype, tables, [grad_scale, found_inf], len(items))
        if found_inf is not None:  # a skipped step is not counted, as in torch's fused AdamW
            torch._foreach_sub_(steps, [found_inf] * len(steps))


def _log(beta: float) -> float:
    return math.log(beta) if beta > 0 else -math.inf  # beta**step = exp(step * log(beta)), 0 when beta = 0
