"""Capture and restore every random number generator a training run draws from.

An exact resume needs the same draws in the same order: torch's CPU generator (shuffling, dropout, init),
each CUDA device's generator when CUDA is in use, numpy's global generator and Python's ``random``.

A snapshot is plain data (tensors, ints, floats, tuples, dicts), so a checkpoint holding it loads with
``torch.load(weights_only=True)``: numpy's state array is kept as an int64 tensor, not a numpy array.

In a checkpoint, the snapshots form one entry per rank: ``{"world_size": W, "ranks": [rank 0's, ...]}``
(:func:`entry`); a single process writes ``W = 1``. Under ``torch.distributed`` the distributed layer
gathers every rank's snapshot into that list.

Example:
    >>> import torch
    >>> state = capture_rng_state()
    >>> a = torch.rand(3)
    >>> restore_rng_state(state)
    >>> torch.equal(a, torch.rand(3))
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Return a snapshot of all global generators, as plain data."""
    # The legacy tuple (numpy's default); its stubs also allow the dict form.
    kind, key, pos, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    # Only when CUDA is already initialised: asking would otherwise create a context on every device.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def entry(snapshots: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The checkpoint's RNG entry: one snapshot per rank (``None`` where there is none), and the world size."""
    return {"world_size": len(snapshots), "ranks": list(snapshots)}


def check_rng_state(state: Any, where: str) -> list[str]:
    """Problems with a snapshot from a checkpoint (empty when it can be restored); ``where`` names it."""
    if not isinstance(state, dict):
        return [f"{where} is {type(state).__name__}, not a dict of generator states"]
    problems = [f"{where} has no {key!r} generator state" for key in ("torch", "numpy", "python") if key not in state]
    if problems:
        return problems
    if not isinstance(state["torch"], torch.Tensor) or state["torch"].dtype != torch.uint8:
        problems.append(f"{where}['torch'] is not a uint8 tensor")
    n = state["numpy"]
    if not isinstance(n, dict) or not {"kind", "key", "pos", "has_gauss", "cached_gaussian"} <= set(n):
        problems.append(f"{where}['numpy'] lacks the numpy generator's fields")
    elif not isinstance(n["key"], torch.Tensor) or n["key"].numel() != 624:
        problems.append(f"{where}['numpy']['key'] is not the 624 words of numpy's MT19937 state")
    p = state["python"]
    if not isinstance(p, (tuple, list)) or len(p) != 3 or not isinstance(p[1], (tuple, list)) or len(p[1]) != 625:
        problems.append(f"{where}['python'] is not a state of Python's random module")
    return problems


def problems(rng: Any, pass_open: bool, rank: int, world_size: int) -> list[str]:
    if not isinstance(rng, Mapping) or not isinstance(rng.get("ranks"), list) or "world_size" not in rng:
        return ["its rng entry is not {'world_size': W, 'ranks': [...]}"]
    saved_world = rng["world_size"]
    if saved_world != len(rng["ranks"]):
        return [f"its rng entry says world_size={saved_world} but holds {len(rng['ranks'])} ranks"]
    if saved_world != world_size and pass_open:
        return [
            f"it was written by {saved_world} processes and this run has {world_size}: a checkpoint taken inside "
            "a pass over the data (mid-epoch, or mid-stream with valid_every) resumes exactly only at the same "
            "world size; resume from an end-of-epoch checkpoint"
        ]
    entry = rng["ranks"][rank] if rank < saved_world else rng["ranks"][0]
    if not isinstance(entry, Mapping) or "now" not in entry or "phase_start" not in entry:
        return [f"its rng entry for rank {rank} lacks 'now' or 'phase_start'"]
    problems = check_rng_state(entry["now"], f"rng of rank {rank}")
    if pass_open:
        problems += check_rng_state(entry["phase_start"], f"rng at the phase start of rank {rank}")
    return problems
