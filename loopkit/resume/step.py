"""The step's own state in a checkpoint: the ``"step"`` section.

A :class:`~loopkit.loop.step.Step` that carries state from batch to batch (``RecurrentStep``'s hidden state, the
word language model's ``hidden``) defines ``state_dict()`` and ``load_state_dict(state)``. Each rank's state is
saved (``{"world_size": W, "ranks": [state or None, ...]}``), so a run resumed in the middle of an epoch starts
its next batch from the state the killed run would have used, bit for bit. A step without ``state_dict`` saves
``None``. The section is optional (older format-2 checkpoints lack it: their resume starts from a fresh state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def capture(step: object) -> Any:
    """This rank's state of ``step``: its ``state_dict()``, or None for a step that keeps none."""
    state_dict = getattr(step, "state_dict", None)
    return state_dict() if callable(state_dict) else None


def entry(states: Sequence[Any]) -> dict[str, Any]:
    """The section from every rank's :func:`capture`, in rank order."""
    return {"world_size": len(states), "ranks": list(states)}


def problems(section: Mapping[str, Any] | None, step: object, rank: int, world_size: int) -> list[str]:
    """Why ``section`` cannot be restored into ``step`` on ``rank`` of ``world_size`` ([] when it can)."""
    mine = _mine(section, rank, world_size)
    if mine is None or callable(getattr(step, "load_state_dict", None)):
        return []
    return [
        f"the checkpoint holds the state of the step it was trained with (carried across batches), but this "
        f"learner's step {type(step).__name__} cannot take it (it has no load_state_dict); build the Learner with "
        "the same step (e.g. the same RecurrentStep)"
    ]


def restore(section: Mapping[str, Any] | None, step: object, rank: int, world_size: int) -> None:
    """Load this rank's saved state into ``step``; nothing when there is none, or the world size changed (the
    state belongs to another rank's share of the data; the step starts fresh at its next pass)."""
    mine = _mine(section, rank, world_size)
    if mine is not None:
        step.load_state_dict(mine)  # type: ignore[attr-defined]  # problems() checked it


def _mine(section: Mapping[str, Any] | None, rank: int, world_size: int) -> Any:
    if not section or section.get("world_size") != world_size or rank >= len(section.get("ranks", ())):
        return None
    return section["ranks"][rank]


__all__ = ["capture", "entry", "problems", "restore"]
