"""Build an optimizer from its name and an options dict, as configuration files and fine-tuning tools do.

Names are case-insensitive: every optimizer of ``torch.optim`` (Adadelta, Adagrad, Adam, AdamW, SparseAdam,
Adamax, ASGD, LBFGS, NAdam, RAdam, RMSprop, Rprop, SGD) and loopkit's fused ones (FusedAdamW, FusedSGD) when
``loopkit.optim`` is installed. An unknown name lists the valid ones; an unknown option lists the optimizer's.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = make_optimizer("adamw", model.parameters(), {"lr": 3e-4, "weight_decay": 0.05})
    >>> type(opt).__name__, opt.defaults["lr"], opt.defaults["weight_decay"]
    ('AdamW', 0.0003, 0.05)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

TORCH_OPTIMIZERS = (
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "SparseAdam",
    "Adamax",
    "ASGD",
    "LBFGS",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SGD",
)
FUSED_OPTIMIZERS = ("FusedAdamW", "FusedSGD")


def available_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """Lower-cased name -> optimizer class, for every optimizer this installation can build."""
    found = {name.lower(): getattr(torch.optim, name) for name in TORCH_OPTIMIZERS if hasattr(torch.optim, name)}
    try:
        fused = importlib.import_module("loopkit.optim")
    except ImportError:
        fused = None
    for name in FUSED_OPTIMIZERS:
        if fused is not None and hasattr(fused, name):
            found[name.lower()] = getattr(fused, name)
    return found


def make_optimizer(
    name: str, params: Iterable[Any], options: Mapping[str, Any] | None = None, **more: Any
) -> torch.optim.Optimizer:
    """Return ``OptimizerClass(params, **options, **more)`` for the optimizer called ``name``.

    The options are the optimizer's defaults, so they apply to every param group that does not set its own
    value on purpose: ``make_optimizer("adamw", layerwise_groups(blocks, lr, decay), {"weight_decay": 0.01})``
    decays every decayed group by 0.01 (each group keeps its own ``lr``, and the no-decay groups their 0.0).
    :func:`optimizer_settings` reads back what each group really got.

    Args:
        name: the optimizer's class name, any case (``"adamw"``, ``"SGD"``).
        params: parameters or parameter-group dicts, as for any torch optimizer.
        options: keyword arguments for the optimizer (``{"lr": 1e-3, "betas": (0.9, 0.95)}``).
        **more: further keyword arguments, merged over ``options``.

    Returns:
        the optimizer, built as ``cls(params, **options, **more)``.

    Raises:
        TypeError: a ``name`` that is not a string.
        ValueError: an unknown name (the message lists the valid ones), or an option the optimizer does not take
            (the message lists the ones it does); the optimizer's own errors for bad values.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string such as 'adamw', got {name!r}")
    known = available_optimizers()
    cls = known.get(name.lower())
    if cls is None:
        names = sorted({c.__name__ for c in known.values()}, key=str.lower)
        raise ValueError(f"unknown optimizer {name!r}; valid names (any case): {', '.join(names)}")
    kwargs = {**(options or {}), **more}
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "params")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no option(s) {', '.join(map(repr, unknown))}; its options are {', '.join(accepted)}"
        )
    return cls(params, **kwargs)


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What ``optimizer`` really uses, read from its ``param_groups``: its class name and, per group, every
    setting (``lr``, ``weight_decay``, ``betas``, ..., a group's ``name`` if it has one) and its parameter count.

    Values that are not plain numbers, strings, booleans or None (a tensor ``lr``) are given as ``repr``; tuples
    become lists, so the result is JSON as it stands (a run record holds it).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> groups = [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}]
        >>> s = optimizer_settings(make_optimizer("adamw", groups, {"lr": 0.1, "weight_decay": 0.01}))
        >>> [(g["lr"], g["weight_decay"], g["n_params"]) for g in s["groups"]]
        [(0.1, 0.01, 2), (0.1, 0.0, 1)]
    """

    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return repr(value)

    groups = []
    for group in optimizer.param_groups:
        settings = {k: plain(v) for k, v in group.items() if k != "params"}
        settings["n_params"] = sum(p.numel() for p in group["params"])
        groups.append(settings)
    return {"name": type(optimizer).__name__, "groups": groups}
