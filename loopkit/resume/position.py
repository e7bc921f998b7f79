"""The checkpoint's ``position`` section: where the loop stood (epoch, train batches done in it, optimizer steps
done, the fit's length), and the check that a fit can continue from there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def problems(position: Any, n_epochs: int | None, max_steps: int | None, n_batches: int | None) -> list[str]:
    if not isinstance(position, Mapping) or not {"epoch", "batch", "global_step"} <= set(position):
        return ["its position entry lacks 'epoch', 'batch' or 'global_step'"]
    epoch, batch, step = position["epoch"], position["batch"], position["global_step"]
    if max_steps is not None and step >= max_steps:
        end = "past the end" if step > max_steps else "at the end"
        return [
            f"it was taken after {step} optimizer steps, {end} of this fit's max_steps={max_steps}: resuming "
            f"would train nothing; max_steps counts the whole run's steps, so pass more than {step}"
        ]
    if n_epochs is None:
        return []
    if batch:
        where = f"in epoch {epoch} (counting from 0) after {batch} of its train batches"
    else:
        where = f"after {epoch} complete epoch{'s' if epoch != 1 else ''}"
    if epoch > n_epochs or (epoch == n_epochs and batch > 0):
        return [
            f"it was taken {where}, past the end of this fit of n_epochs={n_epochs}; n_epochs is the total of "
            f"the whole run: pass more than {epoch} to train on from it"
        ]
    if epoch == n_epochs:
        return [
            f"it was taken {where}, the end of this fit of n_epochs={n_epochs}: resuming would train nothing; "
            "to train further, pass a larger n_epochs, and give every Scheduler on_mismatch='stretch' (the rest of "
            "its schedules over the added epochs) or on_mismatch='hold' (a finished schedule stays at its last "
            "value)"
        ]
    if batch and n_batches is not None and batch > n_batches:
        return [
            f"it was taken {where}, but train_data now has {n_batches} batches per epoch; resume with the "
            "checkpointed run's train data"
        ]
    return []
