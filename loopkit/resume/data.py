"""The checkpoint's ``data`` section: where each rank stood in its pass over the train data, and what the data
holds itself that a resume must restore (its own state, its samplers' pass state, its random generators).

The loop's side (iterating, seeking, replaying) is :mod:`loopkit.loop.data_cursor`; this module holds only what
is saved, checked and read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def is_stateful(data: object) -> bool:
    """Whether ``data`` saves and loads its own position (torchdata's ``StatefulDataLoader`` protocol)."""
    return callable(getattr(data, "state_dict", None)) and callable(getattr(data, "load_state_dict", None))


def data_generators(data: object) -> list[torch.Generator]:
    """The random generators ``data`` holds itself, each once: the loader's ``generator`` and its samplers'."""
    holders = [data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)]
    holders.append(getattr(holders[2], "sampler", None))
    found: dict[int, torch.Generator] = {}
    for holder in holders:
        generator = getattr(holder, "generator", None)
        if isinstance(generator, torch.Generator):
            found.setdefault(id(generator), generator)
    return list(found.values())


def stateful_samplers(data: object) -> list[Any]:
    """The samplers of ``data`` that keep what a pass needs to be drawn again (``pass_state()``,
    ``check_pass_state(state)`` and ``load_pass_state(state)``, as
    :class:`~loopkit.scheduling.batch_size.ScheduledBatchSampler`), unless ``data`` saves its place itself."""
    if is_stateful(data):
        return []
    found: dict[int, Any] = {}
    for sampler in (getattr(data, "batch_sampler", None), getattr(data, "sampler", None)):
        if sampler is not None and all(
            callable(getattr(sampler, name, None)) for name in ("pass_state", "check_pass_state", "load_pass_state")
        ):
            found.setdefault(id(sampler), sampler)
    return list(found.values())


def entry(positions: list[dict[str, Any]], valid_every: int | None) -> dict[str, Any]:
    """The checkpoint's ``data`` entry from every rank's :meth:`DataCursor.position`."""
    return {"valid_every": valid_every, "world_size": len(positions), "ranks": positions}


def problems(entry: Any, valid_every: int | None, rank: int) -> list[str]:
    """Why a checkpoint's ``data`` entry cannot be resumed in a fit with ``valid_every`` on ``rank`` (its form;
    :func:`fit_problems` checks it against the train data)."""
    if entry is None:
        return []
    if not isinstance(entry, Mapping) or not isinstance(entry.get("ranks"), list) or not entry["ranks"]:
        return ["its data entry is not {'valid_every': N, 'world_size': W, 'ranks': [...]}"]
    if entry.get("valid_every") != valid_every:
        return [
            f"it was taken in a fit with valid_every={entry.get('valid_every')!r} and this fit has "
            f"valid_every={valid_every!r}: the loop's epochs would not line up; resume with "
            f"valid_every={entry.get('valid_every')!r}"
        ]
    mine = entry["ranks"][rank] if rank < len(entry["ranks"]) else entry["ranks"][0]
    if not isinstance(mine, Mapping) or not {"batches", "passes", "state"} <= set(mine):
        return [f"its data entry for rank {rank} lacks 'batches', 'passes' or 'state'"]
    generators = mine.get("generators")
    if generators is not None and not (isinstance(generators, Mapping) and isinstance(generators.get("now"), list)):
        return [f"its data entry for rank {rank} has generators={generators!r}, not {{'now': [...], 'at_start': ...}}"]
    return []


def fit_problems(mine: Mapping[str, Any], data: Any, n: int | None) -> list[str]:
    """Why this rank's data position ``mine`` (checked by :func:`problems`) cannot be restored into ``data``
    of ``n`` batches a pass (None: unknown): a pass longer than the data, or other samplers or generators than the
    checkpointed run's."""
    samplers, generators = stateful_samplers(data), mine.get("generators")
    saved_samplers = mine.get("samplers")
    if isinstance(saved_samplers, list):
        if len(saved_samplers) != len(samplers):
            return [
                f"its train data had {len(saved_samplers)} sampler(s) that keep their pass (a ScheduledBatchSampler) "
                f"and this learner's has {len(samplers)}: build the train data as the checkpointed run did"
            ]
        for sampler, state in zip(samplers, saved_samplers):
            try:
                sampler.check_pass_state(state)
            except ValueError as error:
                return [str(error)]
    if not samplers and n is not None and isinstance(mine["batches"], int) and mine["batches"] > n:
        return [
            f"it was taken {mine['batches']} batches into a pass over the train data, which now has {n} batches; "
            "resume with the checkpointed run's train data"
        ]
    if generators is not None:
        saved, own = len(generators["now"]), len(data_generators(data))
        if saved != own:
            return [
                f"its train data held {saved} random generator(s) of its own (DataLoader(generator=...), a "
                f"sampler's generator) and this learner's holds {own}: build the train data as the checkpointed "
                "run did, so its shuffle continues where it stood"
            ]
    return []
