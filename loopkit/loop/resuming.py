"""Resuming a fit inside the Learner: verify and load a checkpoint at fit's start, restore the rest in the loop.

A resume has two moments. :func:`begin_resume`, when ``fit`` starts: the whole checkpoint is verified and
checked against this learner and this fit before anything is touched, then model and optimizer are loaded and
the data cursor is put back where it stood. :func:`finish_resume`, at the point in the loop where the
checkpoint was taken (after the resumed epoch's ``before_epoch``/``before_train``, whose writes it replaces):
callback states, the optimizer's options, the step's own state and the RNG.
"""

from __future__ import annotations

import os
from typing import Any

from ..resume import step as step_section
from ..resume.load import load_checkpoint
from ..resume.model import load_model_and_optimizer, restore_group_options
from ..resume.rng import restore_rng_state
from .callback import callback_name
from .learner_state import (
    build_state,
    check_fits,
    data_of_this_rank,
    rank_and_world_size,
    replaces_train_data,
    resumed_epoch_length,
    rng_of_this_rank,
)


def begin_resume(
    learner: Any, resume_from: str | os.PathLike | dict, *, n_epochs: int | None, max_steps: int | None
) -> int:
    """Verify and check the whole checkpoint against ``learner`` in a fit of ``n_epochs`` and ``max_steps``,
    then load model and optimizer; returns the epoch to continue in. A refused checkpoint leaves the learner
    exactly as it was."""
    if isinstance(resume_from, dict):
        state, source = resume_from, "the checkpoint state passed to fit"
    else:
        state, source = load_checkpoint(resume_from), repr(os.fspath(resume_from))
    rank, world_size = rank_and_world_size()
    cursor = learner._data
    # What callbacks check the checkpoint against: this learner in the fit about to start.
    this_fit = _FitView(learner, n_epochs=n_epochs, n_batches=cursor.epoch_length(), max_steps=max_steps)
    check_fits(
        state,
        this_fit,
        source,
        n_epochs=n_epochs,
        max_steps=max_steps,
        valid_every=cursor.per_epoch,
        rank=rank,
        world_size=world_size,
    )
    position = state["position"]
    load_model_and_optimizer(state, learner)
    learner.global_step = position["global_step"]
    learner._position = (position["epoch"], position["batch"])
    learner._resume = state
    saved_length = resumed_epoch_length(state) if cursor.per_epoch is None else None
    cursor.resume(
        rng_of_this_rank(state)["phase_start"],
        data_of_this_rank(state),
        saved_length,
        check=replaces_train_data(learner),  # the data checks wait for the data the fit uses
    )
    return int(position["epoch"])


def finish_resume(learner: Any) -> None:
    """Restore callback states, the optimizer's options and the RNG where the checkpoint was taken."""
    resume, learner._resume = learner._resume, None
    if resume is None:  # not resuming: nothing to restore
        return
    states = resume["callbacks"]
    for cb in learner.callbacks:
        name = callback_name(cb)
        if name in states and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(states[name])
    restore_group_options(resume["optimizer"], learner.optimizer)  # a per-epoch schedule wrote them again
    step_section.restore(resume.get("step"), learner.step_logic, *rank_and_world_size())
    restore_rng_state(rng_of_this_rank(resume)["now"])


def state_of(learner: Any) -> dict[str, Any]:
    """``Learner.state_dict``: refused inside an accumulation window and during validation."""
    if learner.micro_batch:
        raise RuntimeError(
            f"a checkpoint can be taken only at an accumulation window's boundary (after its step), not after "
            f"micro-batch {learner.micro_batch} of a window; save from after_batch when learner.micro_batch == 0"
        )
    if learner._position is None:
        raise RuntimeError(
            "a checkpoint can be taken during the train phase or at after_epoch, not during validation "
            "(it could not be resumed exactly); save from after_batch in train or from after_epoch"
        )
    return build_state(learner, *learner._position)


class _FitView:
    """The learner as the fit about to start sees it: this fit's settings over the learner's attributes."""

    def __init__(self, learner: Any, **settings: Any) -> None:
        self.__dict__.update(settings)
        self._learner = learner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._learner, name)
