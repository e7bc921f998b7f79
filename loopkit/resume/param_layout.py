"""Which model parameters each of the optimizer's param groups holds, as a checkpoint records it.

torch's ``optimizer.state_dict()`` numbers parameters 0, 1, 2, ... in group order and says nothing about which
parameter each number was. A checkpoint also records the layout by name (``"param_layout"``: for each param
group, the names of its parameters in the unwrapped model, ``None`` for a parameter outside it), so that

- a resume checks that every group holds the same parameters as at the checkpoint, not only as many, and
- a run that added groups during the fit (``optimizer.add_param_group``, to unfreeze a backbone half-way) resumes
  in an optimizer built as at the start: :func:`restore` adds the missing groups, by name, before torch's
  ``load_state_dict`` restores their options and state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

Layout = list[list[str | None]]


def entry(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Layout:
    """For each param group of ``optimizer``, the names of its parameters in ``model`` (None: not in the model).

    ``model`` is the unwrapped module (:func:`loopkit.loop.learner_state.unwrap_model`); a parameter shared under two
    names (tied weights) has the first name ``named_parameters`` gives.
    """
    names = _names(model)
    return [[names.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]


def problems(saved: Any, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[str]:
    """Why the checkpoint's ``param_layout`` cannot be restored into ``optimizer`` (an empty list if it can).

    The optimizer's groups must hold the checkpoint's first groups' parameters, in order; each further group of
    the checkpoint (added during the checkpointed run) must name parameters of ``model`` that no group holds yet.
    """
    if not _is_layout(saved):
        return ["its param_layout entry is not a list of lists of parameter names"]
    own = entry(optimizer, model)
    if len(saved) < len(own):
        return [
            f"the optimizer has {len(own)} param groups, the checkpoint {len(saved)}: build the optimizer with the "
            "checkpoint's groups (groups may be added during a run, not removed)"
        ]
    problems = []
    for i, (then, now) in enumerate(zip(saved, own)):
        if then != now:
            problems.append(f"param group {i} holds {_few(now)} in the optimizer, {_few(then)} in the checkpoint")
    model_names = set(_names(model).values())
    held = {name for group in own for name in group}
    for i in range(len(own), len(saved)):
        added = saved[i]
        outside = [name for name in added if name is None or name not in model_names]
        taken = [name for name in added if name in held]
        if outside:
            problems.append(
                f"param group {i} was added during the checkpointed run with parameters outside this model "
                f"({_few(outside)}); it cannot be re-added by name: build the optimizer with that group"
            )
        elif taken:
            problems.append(
                f"param group {i} was added during the checkpointed run with {_few(taken)}, which this optimizer's "
                "groups already hold: build the optimizer as the checkpointed run started, or with all its groups"
            )
        held.update(added)
    return problems


def restore(saved_layout: Layout, saved_groups: Sequence[Mapping[str, Any]], optimizer: Any, model: Any) -> None:
    """Add to ``optimizer`` the groups the checkpoint has beyond its own, by parameter name, with their saved
    options (torch's ``load_state_dict`` sets them again, with the state). Call after :func:`problems`
    found none."""
    params = dict(model.named_parameters())
    for i in range(len(optimizer.param_groups), len(saved_layout)):
        saved = saved_groups[i]
        group: list[Any] = [params[name] for name in saved_layout[i]]  # checked: all named
        if "param_names" in saved:  # the optimizer was built with named parameters: keep torch's names
            group = list(zip(saved["param_names"], group))
        options = {key: value for key, value in saved.items() if key not in ("params", "param_names")}
        optimizer.add_param_group({**options, "params": group})


def _names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _is_layout(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(group, list) and all(name is None or isinstance(name, str) for name in group) for group in value
    )


def _few(names: Sequence[str | None]) -> str:
    shown = ", ".join("(a parameter outside the model)" if n is None else repr(n) for n in names[:4])
    more = f" and {len(names) - 4} more" if len(names) > 4 else ""
    return f"[{shown}{more}]"
