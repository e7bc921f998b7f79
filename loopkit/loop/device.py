"""Checking a requested device when the Learner is built, so that a machine without it says so plainly."""

from __future__ import annotations

from typing import Any

import torch


def resolve_device(device: Any) -> torch.device | None:
    """``torch.device(device)``, once the device is known to exist on this machine; ``None`` stays ``None``.

    Raises:
        TypeError: ``device`` is not a string, an int or a ``torch.device``.
        ValueError: an unknown device string, or a device this machine does not have (CUDA not available, a GPU
            index beyond the count, MPS not available), saying which and why.
    """
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"Learner(device={device!r}): pass a device such as 'cpu', 'cuda', 'cuda:1' or a torch.device")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"Learner(device={device!r}) is not a device torch knows ({error})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA support (torch.version.cuda is None)"
                if torch.version.cuda is None
                else f"torch {torch.__version__} was built for CUDA {torch.version.cuda}, but no GPU or driver is "
                "visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
            )
            raise ValueError(
                f"Learner(device={device!r}): CUDA is not available on this machine: {why}; "
                "pass device='cpu' (or leave device out) to train on the CPU"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"Learner(device={device!r}): this machine has {count} CUDA device(s), numbered 0 to {count - 1}"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Learner(device={device!r}): MPS (Apple GPU) is not available on this machine; use 'cpu'")
    return resolved
