"""Parameter groups for fine-tuning: layer-wise learning-rate decay, no decay where it does harm, freezing.

:func:`layerwise_groups` turns an ordered list of blocks (bottom first, head last) into optimizer param groups,
by one of two conventions for where the decay starts:

- ``convention="timm"`` (the default; timm's and BEiT's ``layer_decay``): the head at ``lr``, the block below it
  at ``lr * decay``, the next at ``lr * decay**2``, and so on; ``decay=0`` leaves only the head learning.
- ``convention="zoobot"`` (Zoobot's ``lr_decay``): the head *and* the highest block at ``lr``, the next block at
  ``lr * decay``, and so on; ``decay=0`` trains the highest block and the head.

``decay=1`` gives every block the same rate. Biases and normalisation parameters (and, on request, the whole
head) go to groups without weight decay. The Scheduler's :class:`~loopkit.scheduling.optimizer_hyperparams.LearningRate` scales every
group by its ratio to the largest, so a schedule keeps these ratios all the way through.

Freezing: :func:`set_trainable`, :class:`FreezeUntil` (the head alone for the first epochs, then everything) and
the blocks :func:`layerwise_groups` gives a rate of exactly 0 also hold the batch-norm layers inside the frozen
modules in eval mode (their running statistics stay put, as their weights do), through a forward pre-hook that
the Learner's ``model.train()`` cannot undo; pass ``freeze_norms=False`` to leave them training. Layer and group
norms behave the same in both modes, and a norm layer outside the frozen modules is not touched.

Example:
    >>> import torch
    >>> blocks = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)]
    >>> groups = layerwise_groups(blocks, lr=1e-3, decay=0.5, weight_decay=0.01)
    >>> [(g["name"], g["lr"], g["weight_decay"]) for g in groups]
    [('block0', 0.00025, 0.01), ('block0/no_decay', 0.00025, 0.0), ('block1', 0.0005, 0.01), ('block1/no_decay', 0.0005, 0.0), ('head', 0.001, 0.01), ('head/no_decay', 0.001, 0.0)]
    >>> [g["lr"] for g in layerwise_groups(blocks, lr=1e-3, decay=0.5, convention="zoobot") if "/" not in g["name"]]
    [0.0005, 0.001, 0.001]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ._validate import whole_number
from .loop.callback import Callback
from .resume.frozen import hold_norms_in_eval

_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.LocalResponseNorm)
CONVENTIONS = ("timm", "zoobot")


def _no_decay_names(block: torch.nn.Module) -> set[str]:
    """Names of a block's parameters that should not be decayed: biases and every parameter of a norm layer."""
    names = set()
    for module_name, module in block.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, _NORMS) or param_name == "bias":
                names.add(full)
    return names


def layerwise_groups(
    blocks: Sequence[torch.nn.Module],
    lr: float,
    decay: float,
    *,
    weight_decay: float | None = None,
    no_decay_bias_and_norm: bool = True,
    no_decay_head: bool = False,
    convention: str = "timm",
    freeze_norms: bool = True,
) -> list[dict[str, Any]]:
    """Param groups with a rate falling by ``decay`` per block from the head down.

    Args:
        blocks: modules from the bottom of the network to the head, each parameter in exactly one.
        lr: the head's learning rate.
        decay: factor per block going down, in [0, 1].
        weight_decay: weight decay of the decayed groups; None (the default) leaves it out of them, so the
            optimizer's own ``weight_decay`` option (``make_optimizer("adamw", groups, {"weight_decay": 0.01})``)
            applies to them. The no-decay groups set 0.0 on purpose.
        no_decay_bias_and_norm: put biases and norm-layer parameters in groups with weight decay 0.
        no_decay_head: no weight decay anywhere in the head.
        convention: ``"timm"``: the block ``k`` places below the head at ``lr * decay**k``; ``"zoobot"``: the
            head and the highest block at ``lr``, the block ``k`` places below the head at
            ``lr * decay**(k - 1)`` (Zoobot's ``lr=1e-4, lr_decay=0.75``: head and top block 1e-4, then 7.5e-5,
            5.625e-5, ...).
        freeze_norms: hold the batch-norm layers of every block whose rate is exactly 0 in eval mode, so the
            frozen block's running statistics stay put too (see :func:`hold_norms_in_eval`).

    Returns:
        a list of param-group dicts (with a ``"name"`` each) for any ``torch.optim`` optimizer; empty groups
        are left out.

    Raises:
        TypeError: ``blocks`` that is not a non-empty list of modules, a ``freeze_norms`` that is not a bool.
        ValueError: a ``decay`` outside [0, 1], a negative or non-finite ``lr``, an unknown ``convention``, or
            a parameter in two blocks.

    Sources: discriminative fine-tuning in J. Howard and S. Ruder, "Universal Language Model Fine-tuning"
    (ULMFiT), arXiv:1801.06146; the layer-wise learning-rate decay of K. Clark et al., "ELECTRA",
    arXiv:2003.10555.
    """
    if not blocks or not all(isinstance(b, torch.nn.Module) for b in blocks):
        raise TypeError(f"layerwise_groups needs a non-empty list of modules, bottom first, got {blocks!r}")
    if not _real(decay) or not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1], got decay={decay!r}")
    if not _real(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number >= 0, got lr={lr!r}")
    if convention not in CONVENTIONS:
        raise ValueError(
            f"layerwise_groups(convention={convention!r}): use 'timm' (the block below the head at lr * decay) "
            "or 'zoobot' (the highest block at lr, as the head)"
        )
    if weight_decay is not None and (not _real(weight_decay) or weight_decay < 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 or None, got weight_decay={weight_decay!r}")
    if not isinstance(freeze_norms, bool):
        raise TypeError(f"layerwise_groups(freeze_norms={freeze_norms!r}): pass True or False")
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []
    top = len(blocks) - 1
    for index, block in enumerate(blocks):
        name = "head" if index == top else f"block{index}"
        below = top - index  # blocks between this one and the head, plus one; 0 for the head
        block_lr = lr * decay ** (below if convention == "timm" else max(below - 1, 0))
        if freeze_norms and index != top and block_lr == 0:
            hold_norms_in_eval([block])
        skip = _no_decay_names(block) if no_decay_bias_and_norm else set()
        decayed: list[torch.nn.Parameter] = []
        plain: list[torch.nn.Parameter] = []
        for param_name, param in block.named_parameters():
            if id(param) in seen:
                raise ValueError(
                    f"a parameter of {name} ({param_name}) also belongs to an earlier block; "
                    "give each parameter to one block"
                )
            seen.add(id(param))
            no_decay = param_name in skip or (no_decay_head and index == top)
            (plain if no_decay else decayed).append(param)
        for suffix, params, wd in (("", decayed, weight_decay), ("/no_decay", plain, 0.0)):
            if params:
                group = {"params": params, "lr": block_lr, "name": name + suffix}
                if wd is not None:  # a group sets only what it means to: the optimizer's options fill the rest
                    group["weight_decay"] = wd
                groups.append(group)
    return groups


def set_trainable(modules: Sequence[torch.nn.Module], trainable: bool, *, freeze_norms: bool = True) -> None:
    """Freeze (``False``) or unfreeze (``True``) every parameter of ``modules``.

    With ``freeze_norms`` (the default), freezing also holds the batch-norm layers inside ``modules`` in eval mode
    (their running statistics stay put; :func:`hold_norms_in_eval`) and unfreezing releases them.
    """
    if not isinstance(trainable, bool):
        raise TypeError(f"set_trainable(trainable={trainable!r}): pass True (train) or False (freeze)")
    modules = list(modules)
    if not all(isinstance(m, torch.nn.Module) for m in modules):
        raise TypeError(f"set_trainable needs a list of modules, got {modules!r}")
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(trainable)
    if freeze_norms:
        hold_norms_in_eval(modules, not trainable)


def _real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


class FreezeUntil(Callback):
    """Keep ``modules`` frozen for the first ``epoch`` epochs of a fit, then train them.

    Frozen parameters get no gradient, so every torch optimizer leaves them (and their state) untouched, and
    (with ``freeze_norms``, the default) the batch-norm layers inside them stay in eval mode, so their running
    statistics stay put too.

    Args:
        modules: the modules to hold still (the backbone), e.g. every block but the head.
        epoch: the first epoch (from 0) in which they train.
        freeze_norms: hold their batch-norm layers in eval while frozen.

    Raises:
        TypeError: ``modules`` that is not a non-empty list of modules, a ``freeze_norms`` that is not a bool.
        ValueError: an ``epoch`` that is not a whole number >= 0.
    """

    reads = ("epoch", "n_epochs")
    writes = ("model.requires_grad",)

    def __init__(self, modules: Sequence[torch.nn.Module], epoch: int, *, freeze_norms: bool = True) -> None:
        whole_number("FreezeUntil", "epoch", epoch, 0)
        if not isinstance(freeze_norms, bool):
            raise TypeError(f"FreezeUntil(freeze_norms={freeze_norms!r}): pass True or False")
        self.freeze_norms = freeze_norms
        self.modules = list(modules)
        if not self.modules or not all(isinstance(m, torch.nn.Module) for m in self.modules):
            raise TypeError(f"FreezeUntil needs a non-empty list of modules, got {modules!r}")
        self.epoch = epoch

    def before_fit(self, learner: Any) -> None:
        if learner.n_epochs is not None and self.epoch >= learner.n_epochs:
            warnings.warn(
                f"FreezeUntil(epoch={self.epoch}) in a fit of n_epochs={learner.n_epochs} (epochs 0 to "
                f"{learner.n_epochs - 1}): the modules stay frozen for the whole fit; give an epoch below "
                f"{learner.n_epochs}, or train longer",
                UserWarning,
                stacklevel=2,
            )

    def before_epoch(self, learner: Any) -> None:
        set_trainable(self.modules, learner.epoch >= self.epoch, freeze_norms=self.freeze_norms)

    def after_fit(self, learner: Any) -> None:
        set_trainable(self.modules, True, freeze_norms=self.freeze_norms)
