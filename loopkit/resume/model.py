"""The checkpoint's ``model`` and ``optimizer`` sections: the unwrapped module's ``state_dict``, the optimizer's
``state_dict`` and type, the checks that they fit a learner's model and optimizer, and loading them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import frozen, param_layout

# Optimizers whose state_dicts are interchangeable: loopkit's fused ones keep torch's state layout.
_SAME_STATE_AS = {
    "loopkit.optim.adamw.FusedAdamW": "torch.optim.adamw.AdamW",
    "loopkit.optim.sgd.FusedSGD": "torch.optim.sgd.SGD",
}
# Per-parameter state tensors of torch's optimizers, which have their parameter's shape.
_PARAM_SHAPED = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta", "sum"}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module a checkpoint belongs to: ``model`` without ``torch.compile``'s or data parallelism's wrapper.

    ``torch.compile`` returns an ``OptimizedModule`` whose state keys gain ``_orig_mod.``;
    ``DataParallel`` and ``DistributedDataParallel`` add ``module.``. Saving and loading the module inside
    keeps a checkpoint the same whichever wrappers a run used.
    """
    while True:
        compiled = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule wraps it there
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(compiled, torch.nn.Module):
            model = compiled
        else:
            return model


def optimizer_type(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's class as ``module.qualname``."""
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


def model_problems(saved: Any, model: torch.nn.Module) -> list[str]:
    if not isinstance(saved, Mapping):
        return [f"its model entry is a {type(saved).__name__}, not a state_dict"]
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        problems.append(f"the model's {_few(missing)} are not in the checkpoint")
    if unexpected:
        problems.append(f"the checkpoint's {_few(unexpected)} are not in the model ({type(model).__name__})")
    for key, tensor in own.items():
        value = saved.get(key)
        if key in saved and not isinstance(value, torch.Tensor):
            problems.append(f"model entry {key!r} is a {type(value).__name__}, not a tensor")
        elif isinstance(value, torch.Tensor) and value.shape != tensor.shape:
            problems.append(
                f"model entry {key!r} has shape {tuple(value.shape)} in the checkpoint, {tuple(tensor.shape)} in the model"
            )
    return problems


def optimizer_problems(state: Mapping, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[str]:
    saved, saved_type = state["optimizer"], state["optimizer_type"]
    mine = optimizer_type(optimizer)
    if _SAME_STATE_AS.get(saved_type, saved_type) != _SAME_STATE_AS.get(mine, mine):
        return [
            f"it was written by a {saved_type} optimizer and this learner's is a {mine}: their states do not "
            "mean the same thing; build the learner with the checkpoint's optimizer type"
        ]
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        return ["its optimizer entry is not an optimizer state_dict (no 'state' and 'param_groups')"]
    groups, own_groups = saved["param_groups"], list(optimizer.param_groups)
    layout = state.get("param_layout")
    if layout is not None:
        problems = param_layout.problems(layout, optimizer, model)
        if problems:
            return problems
        if len(layout) != len(groups):
            return [f"its param_layout lists {len(layout)} param groups, its optimizer state {len(groups)}"]
        named = dict(model.named_parameters())  # the groups a resume re-adds, as they will be
        own_groups += [{"params": [named[name] for name in names]} for names in layout[len(own_groups) :]]
    if len(groups) != len(own_groups):
        return [
            f"the optimizer has {len(own_groups)} param groups, the checkpoint {len(groups)} (it records no "
            "param_layout to re-add groups by name): build the optimizer with the checkpoint's groups"
        ]
    problems = []
    params: dict[Any, torch.Tensor] = {}  # the checkpoint's parameter index -> this optimizer's parameter
    for i, (group, own) in enumerate(zip(groups, own_groups)):
        if len(group["params"]) != len(own["params"]):
            problems.append(
                f"param group {i} has {len(own['params'])} parameters in the optimizer, {len(group['params'])} in "
                "the checkpoint"
            )
        params.update(zip(group["params"], own["params"]))
    for index, entry in saved["state"].items():
        param = params.get(index)
        if param is None:
            problems.append(f"optimizer state {index!r} belongs to no parameter of any param group")
            continue
        for name, value in entry.items():
            if name in _PARAM_SHAPED and isinstance(value, torch.Tensor) and value.shape != param.shape:
                problems.append(
                    f"optimizer state {name!r} of parameter {index} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(param.shape)}"
                )
    return problems


def _few(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return f"{'entry' if len(keys) == 1 else 'entries'} {shown}{more}"


def load_model_and_optimizer(state: Mapping[str, Any], learner: Any) -> None:
    """Load a checked state's model and optimizer entries, first re-adding the param groups the checkpointed run
    added during its fit (see :mod:`loopkit.resume.param_layout`)."""
    model = unwrap_model(learner.model)
    model.load_state_dict(state["model"])
    frozen.restore(state.get("frozen"), model)
    layout = state.get("param_layout")
    if layout is not None:
        param_layout.restore(layout, state["optimizer"]["param_groups"], learner.optimizer, model)
    learner.optimizer.load_state_dict(state["optimizer"])


def restore_group_options(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Set every param group's options (lr, momentum, ...) to the checkpoint's, as ``load_state_dict`` did: the
    resumed epoch's ``before_epoch`` handlers (a per-epoch Scheduler) may have written them again since. A
    tensor-valued option is filled in place."""
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key in ("params", "param_names") or key not in group:
                continue
            if isinstance(group[key], torch.Tensor):  # keep the tensor a captured graph or compiled step reads
                group[key].copy_(torch.as_tensor(value))
            else:
                group[key] = value
