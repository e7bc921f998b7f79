"""What a checkpoint holds, and the check that it fits a learner before anything is loaded.

The state (``loopkit-checkpoint-2``) is a dict of plain data:

============================  =====================================================================
``format``                    ``"loopkit-checkpoint-2"``
``model``                     the underlying module's ``state_dict`` (never a wrapper's: see
                              :func:`unwrap_model`), so it loads into a compiled, DataParallel, DDP or
                              plain model alike
``optimizer``                 ``optimizer.state_dict()``
``optimizer_type``            the optimizer's class, ``"torch.optim.adamw.AdamW"``
``callbacks``                 ``{callback name: callback.state_dict()}``: the Scheduler, Metrics, ...;
                              a GradScaler lives in the mixed-precision callback's state and an open
                              gradient-accumulation window in the accumulation callback's
``position``                  ``{"epoch", "batch", "global_step", "n_epochs"}``: the epoch and the train
                              batches (micro-batches) done in it, optimizer steps done, the fit's length
``rng``                       ``{"world_size": W, "ranks": [...]}``: for each rank, ``{"now": ...,
                              "phase_start": ...}`` generator snapshots (:mod:`loopkit.resume.rng`);
                              ``phase_start`` is the RNG when the open pass over the train data began
                              (to draw its shuffle again), ``None`` when no pass is open
``data``                      ``{"valid_every": N or None, "world_size": W, "ranks": [...]}``: for each
                              rank, ``{"batches", "passes", "state", "generators"}``: batches taken from
                              the open pass, passes begun, the data's own ``state_dict()`` if it has one,
                              and the states of the random generators it holds, now and when the pass
                              began (:mod:`loopkit.loop.data_cursor`); optional (older format-2 states
                              lack it)
``run``                       the run record this training belongs to (set by ``loopkit.runs``), or None
``param_layout``              for each param group, its parameters' names in the model
                              (:mod:`loopkit.resume.param_layout`): groups added during the run are
                              re-added by name on resume; optional (older format-2 states lack it)
``frozen``                    ``{"parameters": [...], "norms": [...]}``: the model's parameters with
                              ``requires_grad=False`` and norm layers held in eval
                              (:mod:`loopkit.resume.frozen`); a resume freezes exactly these (a backbone
                              unfrozen during the run trains on); optional (older format-2 states lack it)
``step``                      ``{"world_size": W, "ranks": [...]}``: each rank's state of the Step, for one
                              that carries state across batches (``RecurrentStep``'s hidden state), else
                              None (:mod:`loopkit.resume.step`); optional (older format-2 states lack it)
============================  =====================================================================

:func:`check_fits` validates a state against a learner and a fit in full, without changing anything, and
raises one :class:`~loopkit.resume.file.CheckpointError` listing every problem found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..distributed.collectives import all_gather
from ..distributed.ranks import rank, world_size
from ..resume import data, frozen, param_layout, position, rng, step as step_section
from ..resume.data import fit_problems
from ..resume.file import FORMAT, CheckpointError
from ..resume.model import (
    model_problems,
    optimizer_problems,
    optimizer_type,
    unwrap_model,
)
from ..resume.rng import capture_rng_state
from .callback import Callback, callback_name
from .checks import length

_REQUIRED = ("model", "optimizer", "optimizer_type", "callbacks", "position", "rng")


def check_fits(
    state: Any,
    learner: Any,
    source: str,
    *,
    n_epochs: int | None,
    max_steps: int | None = None,
    valid_every: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` can be resumed by ``learner`` in a fit of ``n_epochs``
    epochs and ``max_steps`` optimizer steps (None: no such limit).

    Checks the format and every entry: the model's keys and shapes, the optimizer's type, groups and state
    shapes, each callback's state (a callback may define ``check_state_dict(state, learner)`` to refuse a
    state it cannot take), the loop position against the fit, and the RNG entry for this rank. Changes
    nothing; ``source`` (a path, or "the state passed to fit") names the checkpoint in the message.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} is a {type(state).__name__}, not a loopkit checkpoint state")
    fmt = state.get("format")
    if fmt != FORMAT:
        raise CheckpointError(
            f"{source} is not a {FORMAT} state (format={fmt!r}); write checkpoints with Checkpoint or "
            "learner.state_dict()"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{source} lacks the entries {missing}: it is incomplete; nothing was loaded")
    problems = (
        model_problems(state["model"], unwrap_model(learner.model))
        + optimizer_problems(state, learner.optimizer, unwrap_model(learner.model))
        + frozen.problems(state.get("frozen"), unwrap_model(learner.model))
        + position.problems(state["position"], n_epochs, max_steps, resumed_epoch_length(state) or learner.n_batches)
        + rng.problems(state["rng"], _pass_open(state) and not _order_is_seeded(state, learner), rank, world_size)
        + data.problems(state.get("data"), valid_every, rank)
        + step_section.problems(state.get("step"), learner.step_logic, rank, world_size)
    )
    if not problems and state.get("data") is not None and not replaces_train_data(learner):  # else when it opens
        problems += fit_problems(data_of_this_rank(state, rank), learner.train_data, length(learner.train_data))
    if not problems:  # callbacks check their state against a learner whose model and position fit
        problems += _callback_problems(state["callbacks"], learner)
    if problems:
        listed = "\n  - ".join(problems)
        raise CheckpointError(f"{source} does not fit this learner; nothing was loaded:\n  - {listed}")


def _order_is_seeded(state: Mapping, learner: Any) -> bool:
    """Whether the checkpointed run's train order came from a seed, not from each rank's RNG: ``Distributed``
    split the data (its samplers draw ``randperm(n)`` from ``seed + epoch``, so global batch ``k`` holds the same
    samples at every world size). Such a pass resumes at another world size: the new ranks skip the global
    batches done and take their parts of the next ones (``Distributed.check_state_dict`` refuses another seed)."""
    callbacks = state.get("callbacks")
    saved = callbacks.get("Distributed") if isinstance(callbacks, Mapping) else None
    splits = any(getattr(cb, "seeds_train_order", False) is True for cb in learner.callbacks)  # this run too
    return splits and isinstance(saved, Mapping) and saved.get("shard_data") is True


def _pass_open(state: Mapping) -> bool:
    """Whether the checkpoint was taken with a pass over the train data open (mid-epoch, or mid-stream)."""
    where, entry = state["position"], state.get("data")
    if isinstance(entry, Mapping) and entry.get("valid_every") is not None:
        ranks = entry.get("ranks")
        return isinstance(ranks, list) and any(isinstance(r, Mapping) and r.get("batches") for r in ranks)
    return bool(isinstance(where, Mapping) and where.get("batch"))


def _callback_problems(saved: Any, learner: Any) -> list[str]:
    if not isinstance(saved, Mapping):
        return ["its callbacks entry is not a dict of callback states"]
    problems = []
    for cb in learner.callbacks:
        name = callback_name(cb)
        if not callable(getattr(cb, "load_state_dict", None)):
            continue
        if name not in saved:
            if getattr(type(cb), "state_dict", Callback.state_dict) is not Callback.state_dict:
                problems.append(
                    f"it holds no state for callback {name} (it holds {sorted(saved)}): the resumed run would "
                    f"start {name} afresh; resume without it, or from a checkpoint of a run that had it"
                )
            continue
        check = getattr(cb, "check_state_dict", None)
        if callable(check):
            try:
                check(saved[name], learner)
            except (ValueError, TypeError, KeyError) as error:
                problems.append(f"callback {name} cannot take its state: {error}")
    return problems


# ----------------------------------------------------------------------------------------------- building
def build_state(learner: Any, epoch: int, batch: int) -> dict[str, Any]:
    """The checkpoint state of ``learner`` at loop position ``(epoch, batch)`` (see the table above).

    ``Learner.state_dict`` calls it at a window boundary only: an accumulation window's gradients are not part of
    a checkpoint.
    """
    cursor = learner._data
    generators = {"now": capture_rng_state(), "phase_start": cursor.rng_at_start if cursor.is_open(batch) else None}
    mine = {"rng": generators, "data": cursor.position(batch), "step": step_section.capture(learner.step_logic)}
    ranks = all_gather(mine)  # every rank's (a collective)
    return {
        "format": FORMAT,
        "model": unwrap_model(learner.model).state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "optimizer_type": optimizer_type(learner.optimizer),
        "callbacks": {callback_name(cb): cb.state_dict() for cb in learner.callbacks if hasattr(cb, "state_dict")},
        "position": {
            "epoch": epoch,
            "batch": batch,
            "global_step": learner.global_step,
            "n_epochs": learner.n_epochs,
            "n_batches": learner.n_batches,
        },
        "rng": rng.entry([r["rng"] for r in ranks]),
        "data": data.entry([r["data"] for r in ranks], cursor.per_epoch),
        "run": learner.run,
        "param_layout": param_layout.entry(learner.optimizer, unwrap_model(learner.model)),
        "frozen": frozen.entry(unwrap_model(learner.model)),
        "step": step_section.entry([r["step"] for r in ranks]),
    }


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size (:mod:`loopkit.distributed.ranks`): from the process group, or from
    torchrun's variables when the checkpoint is checked before ``Distributed`` has built the group, else ``(0, 1)``."""
    return rank(), world_size()


def replaces_train_data(learner: Any) -> bool:
    """Whether a callback declares it writes ``train_data`` (``Distributed`` shards it in ``before_fit``): the
    data a checkpoint is checked against before the fit is then not the data the fit iterates."""
    return any("train_data" in getattr(cb, "writes", ()) for cb in learner.callbacks)


def resumed_epoch_length(state: Any) -> int | None:
    """The batches of the epoch a mid-epoch checkpoint was taken in, as counted when that epoch began (a
    batch-size schedule may have changed the data's length since); None at an epoch's end or when not recorded."""
    where = state.get("position") if isinstance(state, Mapping) else None
    if not isinstance(where, Mapping) or not where.get("batch"):
        return None
    n = where.get("n_batches")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def data_of_this_rank(state: Mapping[str, Any], rank: int | None = None) -> Mapping[str, Any]:
    """Rank ``rank``'s (default: this process's) ``{"batches", "passes", "state", ...}`` data position from a
    checkpoint state (for a state without a ``data`` entry, the epoch's batches done)."""
    entry = state.get("data")
    if entry is None:
        return {"batches": state["position"]["batch"], "passes": 0, "state": None, "generators": None}
    if rank is None:
        rank, _ = rank_and_world_size()
    ranks = entry["ranks"]
    return ranks[rank] if rank < len(ranks) else ranks[0]


def rng_of_this_rank(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """This rank's ``{"now", "phase_start"}`` generator snapshots from a checkpoint state."""
    rank, _ = rank_and_world_size()
    ranks = state["rng"]["ranks"]
    return ranks[rank] if rank < len(ranks) else ranks[0]
