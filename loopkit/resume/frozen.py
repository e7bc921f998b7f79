"""What a run holds frozen: parameters with ``requires_grad=False`` and norm layers held in eval mode.

Freezing helpers (:func:`loopkit.param_groups.set_trainable`, ``FreezeUntil``, ``layerwise_groups``) hold the
batch-norm layers of a frozen block in eval mode, so their running statistics stay put whatever
``model.train()`` does. Neither flag is in a model's ``state_dict``, so a checkpoint records both
(``"frozen"``: :func:`entry`) and a resume restores exactly what the run had frozen
(:func:`restore`): a backbone the run unfroze trains on, though the script that builds the learner
freezes it.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch

# Norm layers whose behaviour depends on the mode: batch and instance norms (running statistics).
_MODAL_NORMS = (torch.nn.modules.batchnorm._NormBase,)

# The norm layers held in eval, with the handle of the hook that holds them (weak: a deleted model frees them).
_HELD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _hold_eval(module: torch.nn.Module, args: Any) -> None:
    # Runs before every forward of a held norm layer, after whatever model.train() did: the layer normalises
    # with its running statistics and does not update them.
    module.training = False


def hold_norms_in_eval(modules: Sequence[torch.nn.Module], hold: bool = True) -> None:
    """Hold (``True``) or release (``False``) every batch/instance-norm layer inside ``modules`` in eval mode.

    A held layer stays in eval whatever ``model.train()`` does, so its running statistics do not change.
    Releasing it puts it back in the mode of its parent's next ``train()``/``eval()`` call.
    """
    for module in modules:
        for layer in module.modules():
            if not isinstance(layer, _MODAL_NORMS):
                continue
            if hold and layer not in _HELD:
                _HELD[layer] = layer.register_forward_pre_hook(_hold_eval)
                layer.training = False
            elif not hold and layer in _HELD:
                _HELD.pop(layer).remove()


def norms_held_in_eval(module: torch.nn.Module) -> list[str]:
    """The names of the norm layers inside ``module`` that a freezing helper holds in eval mode."""
    return [name for name, layer in module.named_modules() if layer in _HELD]


def entry(model: torch.nn.Module) -> dict[str, list[str]]:
    """``{"parameters": names with requires_grad=False, "norms": norm layers held in eval}`` of ``model``."""
    return {
        "parameters": [name for name, p in model.named_parameters() if not p.requires_grad],
        "norms": norms_held_in_eval(model),
    }


def problems(saved: Any, model: torch.nn.Module) -> list[str]:
    """Why a checkpoint's ``frozen`` entry cannot be restored into ``model`` (an empty list if it can)."""
    if saved is None:
        return []
    if not (
        isinstance(saved, Mapping)
        and all(
            isinstance(saved.get(k), list) and all(isinstance(n, str) for n in saved[k])
            for k in ("parameters", "norms")
        )
    ):
        return ["its frozen entry is not {'parameters': [names], 'norms': [names]}"]
    params = {name for name, _ in model.named_parameters()}
    norms = {name for name, layer in model.named_modules() if isinstance(layer, _MODAL_NORMS)}
    unknown = [n for n in saved["parameters"] if n not in params] + [n for n in saved["norms"] if n not in norms]
    if unknown:
        return [f"it freezes parameters or norm layers the model does not have: {unknown[:5]}"]
    return []


def restore(saved: Mapping[str, list[str]] | None, model: torch.nn.Module) -> None:
    """Freeze exactly the parameters and hold exactly the norm layers ``saved`` names (checked by
    :func:`problems`); unfreeze and release the others."""
    if saved is None:
        return
    frozen, held = set(saved["parameters"]), set(saved["norms"])
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    for name, layer in model.named_modules():
        if isinstance(layer, _MODAL_NORMS):
            hold_norms_in_eval([layer], name in held)
