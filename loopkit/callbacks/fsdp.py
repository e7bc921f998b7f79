"""Sharded data parallelism with FSDP2 (``torch.distributed.fsdp.fully_shard``), as ``Distributed(shard=...)`` uses it.

What is sharded (the wrap policy), one of:

- ``True``: the default. Every module held in a ``torch.nn.ModuleList`` (the blocks of a transformer, the
  stages of a stack), or, in a model without a ModuleList, every direct child that holds parameters; then the
  whole model (the root, which takes the parameters no unit took).
- a module type or a tuple of types: every module of one of these types, then the root.
- a function ``fn(name, module) -> bool``, called on ``model.named_modules()`` (the root is ``""``): every
  module it accepts, then the root.

Each unit is one all-gather in the forward and one reduce-scatter in the backward: a unit per block overlaps
communication with compute and keeps one block's full parameters in memory at a time. A policy that matches no
module is an error (a typo in a type, a function that never says yes): the run would otherwise train with one
unit, the whole model gathered at once, which is what sharding was meant to avoid.

The optimizer the user built over the model's parameters keeps working: ``fully_shard`` replaces each parameter
with a sharded one (a ``DTensor``), and :func:`shard_model` puts the new parameters into the optimizer's param
groups in place of the old ones, in the same order, and shards any state the optimizer already holds (a resumed
run's). The optimizer object stays the same, so the Scheduler writes its param groups as for any optimizer.

Example (a policy resolved on a model; sharding itself needs a process group):
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> [name for name, _ in units(model, True)]
    ['0', '2', '']
    >>> [name for name, _ in units(model, torch.nn.Linear)]
    ['0', '2', '']
    >>> units(model, torch.nn.Conv2d)
    Traceback (most recent call last):
    ...
    ValueError: Distributed(shard=<class 'torch.nn.modules.conv.Conv2d'>) matches no module of the Sequential: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: What ``Distributed(shard=...)`` accepts besides False: True, a module type, a tuple of them, or a function.
ShardPolicy = bool | type | tuple[type, ...] | Callable[[str, torch.nn.Module], bool]


def check_policy(shard: object) -> None:
    """Raise ``TypeError`` unless ``shard`` is a wrap policy (see the module docs) or False."""
    if isinstance(shard, bool) or (callable(shard) and not isinstance(shard, type)):
        return
    types = shard if isinstance(shard, tuple) else (shard,)
    if not types or not all(isinstance(t, type) and issubclass(t, torch.nn.Module) for t in types):
        raise TypeError(
            f"Distributed(shard={shard!r}): pass True (a unit per block), a torch.nn.Module subclass or a tuple "
            "of them, or a function (name, module) -> bool"
        )


def units(model: torch.nn.Module, shard: ShardPolicy) -> list[tuple[str, torch.nn.Module]]:
    """The ``(name, module)`` pairs ``fully_shard`` is applied to, innermost first, the root (``""``) last.

    Raises:
        ValueError: a policy given as types or a function that matches no module of ``model`` (below the root).
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    if shard is True:
        chosen = [(n, m) for n, m in named if _in_module_list(model, n)]
        if not chosen:
            chosen = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    elif isinstance(shard, (type, tuple)):
        chosen = [(n, m) for n, m in named if isinstance(m, shard)]
    else:
        chosen = [(n, m) for n, m in named if shard(n, m)]  # type: ignore[operator]
        if not chosen:
            raise ValueError(
                f"Distributed(shard={shard!r}) accepts no module of the {type(model).__name__} (it said no to "
                f"all of {[n for n, _ in named][:8]}...): the whole model would be one unit; fix the function, "
                "or pass shard=True for a unit per block"
            )
    if not chosen:
        present = sorted({type(m).__name__ for _, m in named})
        raise ValueError(
            f"Distributed(shard={shard!r}) matches no module of the {type(model).__name__}: it holds {present}; "
            "name one of these types, or pass shard=True for a unit per block"
        )
    # Innermost first: fully_shard on a module leaves out the parameters of units inside it, sharded before.
    chosen.sort(key=lambda pair: -pair[0].count("."))
    return [*chosen, ("", model)]


def _in_module_list(model: torch.nn.Module, name: str) -> bool:
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return isinstance(parent, torch.nn.ModuleList)


def shard_model(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    shard: ShardPolicy,
    *,
    mixed_precision: Any = None,
) -> torch.nn.Module:
    """Apply ``fully_shard`` to ``model`` as ``shard`` says; move ``optimizer`` onto the sharded parameters.

    Args:
        model: the unwrapped module, on this rank's device; sharded in place (and returned).
        optimizer: built over ``model``'s parameters; its param groups get the sharded parameters in the same
            places, and any state it holds is sharded like its parameter.
        shard: the wrap policy (module docs).
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecisionPolicy``, or None (parameters, gradients and
            reductions in the parameters' dtype).

    Raises:
        ValueError: a policy that matches nothing; an optimizer holding a parameter the model does not.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import distribute_tensor

    names = {id(p): name for name, p in model.named_parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    foreign = [i for i, p in enumerate(held) if id(p) not in names]
    if foreign:
        raise ValueError(
            f"the optimizer holds {len(foreign)} parameter(s) that are not the model's (positions {foreign[:5]} "
            "of its param groups): Distributed(shard=...) can move onto the sharded parameters only the model's "
            "own; build the optimizer over model.parameters()"
        )
    policy = mixed_precision if mixed_precision is not None else MixedPrecisionPolicy()
    for _, unit in units(model, shard):
        fully_shard(unit, mp_policy=policy)
    sharded = dict(model.named_parameters())
    for group in optimizer.param_groups:
        old = group["params"]
        group["params"] = [sharded[names[id(p)]] for p in old]
        for before, after in zip(old, group["params"]):
            state = optimizer.state.pop(before, None)
            if state:  # every rank holds the same whole tensor: each keeps its own shard, nothing is sent
                optimizer.state[after] = {
                    key: distribute_tensor(value, after.device_mesh, after.placements, src_data_rank=None)
                    if isinstance(value, torch.Tensor) and value.shape == before.shape and value.dim() > 0
                    else value
                    for key, value in state.items()
                }
    return model


def is_fully_sharded(model: torch.nn.Module) -> bool:
    """Whether ``fully_shard`` (FSDP2) was applied to ``model``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch before FSDP2
        return False
    return isinstance(model, FSDPModule)


__all__ = ["ShardPolicy", "check_policy", "is_fully_sharded", "shard_model", "units"]
