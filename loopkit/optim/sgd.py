"""FusedSGD: SGD with momentum in one kernel launch per parameter dtype, hyperparameters read from device memory."""

from __future__ import annotations

from typing import Any

import torch

from . import _cuda
from ._base import FusedOptimizer, check_flag, check_implementation, check_number, grad_of, with_items_by_group
from ._reference import sgd_reference


class FusedSGD(FusedOptimizer):
    """SGD with momentum, dampening, Nesterov and weight decay, with torch.optim.SGD's semantics.

    Accepts torch.optim.SGD's arguments: ``maximize`` is implemented; ``differentiable=True`` is refused (use
    ``torch.optim.SGD``); ``foreach`` and ``fused`` choose torch's implementation, and only the values that
    describe this one (fused) are accepted. The momentum buffer is float32 whatever the parameter dtype; the state_dict uses torch's key
    (``momentum_buffer``). On a machine without CUDA the reference implementation runs (one warning).

    Raises:
        ValueError: at construction (and for a param group added or loaded later), an ``lr``, ``momentum`` or
            ``weight_decay`` that is not a number >= 0, a ``dampening`` outside [0, 1], Nesterov without
            ``momentum > 0`` and ``dampening = 0``, ``differentiable=True``, ``foreach=True`` or ``fused=False``.
        RuntimeError: replaying a captured CUDA graph after a group's momentum went from 0 to nonzero (the
            capture has no momentum buffer to update).
    """

    kernel_name = "sgd_step"
    elementwise_columns = 3
    column_names = ("parameter", "gradient", "momentum_buffer")

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

    def _reference_step(
        self, items: list[tuple[int, torch.Tensor]], grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None
    ) -> None:
        if found_inf is not None and found_inf.item():  # the CPU path: reading the flag costs no device sync
            return  # skipped, as when GradScaler skips torch's step: no buffer made or moved
        for gi, live in with_items_by_group(items).items():
            group = self.param_groups[gi]
            buffers = [self.state[p].get("momentum_buffer") for p in live]
            new = sgd_reference(
                live,
                [grad_of(p) if grad_scale is None else grad_of(p).float() / grad_scale for p in live],
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

    def _launch(
        self,
        device: torch.device,
        dtype: torch.dtype,
        items: list[tuple[int, torch.Tensor]],
        scaling: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> None:
        # As in torch, a buffer exists once a step ran with momentum, and its first step sets buf = d_p, undampened.
        # Which buffers are new is a per-tensor flag on the device (``first``), not a host decision: a step that
        # GradScaler skips on the device leaves a new buffer new, and the host never learns it was skipped.
        created = []
        for i, (gi, p) in enumerate(items):
            if self.param_groups[gi]["momentum"] != 0 and "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(
                    p, dtype=torch.float32, memory_format=torch.preserve_format
                )
                created.append(i)
        buffers = [self.state[p].get("momentum_buffer") for _, p in items]
        slot = (device, dtype)
        tables, built = self._tables(slot, items, [[p for _, p in items], [p.grad for _, p in items], buffers])
        if built:
            self._first[slot] = self._first_flags(slot, items, created, device)
            self._unbuffered[slot] = {gi for (gi, _), b in zip(items, buffers) if b is None}
        first, params, pending = self._first[slot]
        grad_scale, found_inf = scaling
        self._run_kernel(device, dtype, tables, [grad_scale, found_inf, first], len(items))
        if pending:
            if found_inf is None:
                first.zero_()
                self._first[slot] = (first, params, False)
            else:
                first.mul_(found_inf)  # still new where this step was skipped

    def _first_flags(
        self, slot: Any, items: list[tuple[int, torch.Tensor]], created: list[int], device: torch.device
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], bool]:
        """The ``first`` flags for a new table: 1 for buffers made in this step, and, where the previous table's
        flags may still be set (steps skipped since), those flags carried over on the device (no sync)."""
        flags = [0.0] * len(items)
        for i in created:
            flags[i] = 1.0
        first = _cuda.device_table(flags, device, torch.float32)
        pending = bool(created)
        old = self._first.get(slot)
        if old is not None and old[2]:
            position = {id(p): i for i, (_, p) in enumerate(items)}
            pairs = [(position[id(p)], j) for j, p in enumerate(old[1]) if id(p) in position]
            if pairs:
                new_index = _cuda.device_table([i for i, _ in pairs], device)
                old_index = _cuda.device_table([j for _, j in pairs], device)
                first[new_index] = torch.maximum(first[new_index], old[0][old_index])
                pending = True
        return first, tuple(p for _, p in items), pending

    def _check_replayable(self) -> None:
        for groups in self._unbuffered.values():
            for gi in sorted(groups):
                momentum = self.param_groups[gi]["momentum"]
                if momentum != 0:
                    raise RuntimeError(
                        f"FusedSGD: param group {gi}'s momentum is now {momentum!r}, but its parameters had no momentum "
                        "buffer (momentum was 0) when the launch was captured, and a replay cannot create one. Take "
                        "one step() with momentum > 0 before capturing, or capture again"
                    )

    def _forget_launches(self) -> None:
        super()._forget_launches()
        self._first: dict[Any, tuple[torch.Tensor, tuple[torch.Tensor, ...], bool]] = {}
        self._unbuffered: dict[Any, set[int]] = {}

    def state_dict(self) -> dict[str, Any]:
        """torch's, without the buffers that no step has used yet (their first step was skipped by GradScaler),
        as torch.optim.SGD, which makes no buffer in a skipped step. Reads the device flags: a sync, as saving is."""
        state_dict = super().state_dict()
        unused = {
            id(p)
            for first, params, pending in self._first.values()
            if pending
            for p, flag in zip(params, first.tolist())
            if flag
        }
        if unused:
            ids = [id(p) for group in self.param_groups for p in group["params"]]
            for index, key in enumerate(ids):
                if key in unused and index in state_dict["state"]:
                    kept = {k: v for k, v in state_dict["state"][index].items() if k != "momentum_buffer"}
                    if kept:
                        state_dict["state"][index] = kept
                    else:
                        del state_dict["state"][index]
        return state_dict
