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
                              "phase_start": ...}`` generator snapshots (:mod:`loopkit.loop.rng`);
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
                              (:mod:`loopkit.loop.param_layout`): groups added during the run are
                              re-added by name on resume; optional (older format-2 states lack it)
``frozen``                    ``{"parameters": [...], "norms": [...]}``: the model's parameters with
                              ``requires_grad=False`` and norm layers held in eval
                              (:mod:`loopkit.loop.frozen`); a resume freezes exactly these (a backbone
                              unfrozen during the run trains on); optional (older format-2 states lack it)
============================  =====================================================================

:func:`check_fits` validates a state against a learner and a fit in full, without changing anything, and
raises one :class:`~loopkit.loop.checkpoint.CheckpointError` listing every problem found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..distributed.collectives import all_gather
from ..distributed.ranks import rank, world_size
from .callback import Callback, callback_name
from .checkpoint import FORMAT, CheckpointError
from .data_cursor import data_entry, data_problems, fit_problems
from .frozen import frozen_problems, frozen_state, restore_frozen
from .param_layout import layout_problems, param_layout, readd_groups
from .rng import capture_rng_state, check_rng_state, rng_entry

# Optimizers whose state_dicts are interchangeable: loopkit's fused ones keep torch's state layout.
_SAME_STATE_AS = {
    "loopkit.optim.adamw.FusedAdamW": "torch.optim.adamw.AdamW",
    "loopkit.optim.sgd.FusedSGD": "torch.optim.sgd.SGD",
}
# Per-parameter state tensors of torch's optimizers, which have their parameter's shape.
_PARAM_SHAPED = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta", "sum"}
_REQUIRED = ("model", "optimizer", "optimizer_type", "callbacks", "position", "rng")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module a checkpoint belongs to: ``model`` without ``torch.compile``'s or data parallelism's wrapper.

    ``torch.compile`` returns an ``OptimizedModule`` whose state keys gain ``_orig_mod.``;
    ``DataParallel`` and ``DistributedDataParallel`` add ``module.``. Saving and loading the module inside
    keeps a checkpoint the same whichever wrappers a run used.
    """
    while True:
        compiled = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule wraps it there
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(compiled, torch.nn.Module):
            model = compiled
        else:
            return model


def optimizer_type(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's class as ``module.qualname``."""
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


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
        _model_problems(state["model"], unwrap_model(learner.model))
        + _optimizer_problems(state, learner.optimizer, unwrap_model(learner.model))
        + frozen_problems(state.get("frozen"), unwrap_model(learner.model))
        + _position_problems(state["position"], n_epochs, max_steps, resumed_epoch_length(state) or learner.n_batches)
        + _rng_problems(state["rng"], _pass_open(state) and not _order_is_seeded(state, learner), rank, world_size)
        + data_problems(state.get("data"), valid_every, rank)
    )
    if not problems and state.get("data") is not None and not replaces_train_data(learner):  # else when it opens
        problems += fit_problems(data_of_this_rank(state, rank), learner.train_data)
    if not problems:  # callbacks check their state against a learner whose model and position fit
        problems += _callback_problems(state["callbacks"], learner)
    if problems:
        listed = "\n  - ".join(problems)
        raise CheckpointError(f"{source} does not fit this learner; nothing was loaded:\n  - {listed}")


def _model_problems(saved: Any, model: torch.nn.Module) -> list[str]:
    if not isinstance(saved, Mapping):
        return [f"its model entry is a {type(saved).__name__}, not a state_dict"]
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        problems.append(f"the model's {_few(missing)} are not in the checkpoint")
    if unexpected:
        problems.append(f"the checkpoint's {_few(unexpected)} are not in the model ({type(model).__name__})")
    for key, tensor in own.items():
        value = saved.get(key)
        if key in saved and not isinstance(value, torch.Tensor):
            problems.append(f"model entry {key!r} is a {type(value).__name__}, not a tensor")
        elif isinstance(value, torch.Tensor) and value.shape != tensor.shape:
            problems.append(
                f"model entry {key!r} has shape {tuple(value.shape)} in the checkpoint, {tuple(tensor.shape)} in the model"
            )
    return problems


def _optimizer_problems(state: Mapping, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[str]:
    saved, saved_type = state["optimizer"], state["optimizer_type"]
    mine = optimizer_type(optimizer)
    if _SAME_STATE_AS.get(saved_type, saved_type) != _SAME_STATE_AS.get(mine, mine):
        return [
            f"it was written by a {saved_type} optimizer and this learner's is a {mine}: their states do not "
            "mean the same thing; build the learner with the checkpoint's optimizer type"
        ]
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        return ["its optimizer entry is not an optimizer state_dict (no 'state' and 'param_groups')"]
    groups, own_groups = saved["param_groups"], list(optimizer.param_groups)
    layout = state.get("param_layout")
    if layout is not None:
        problems = layout_problems(layout, optimizer, model)
        if problems:
            return problems
        if len(layout) != len(groups):
            return [f"its param_layout lists {len(layout)} param groups, its optimizer state {len(groups)}"]
        named = dict(model.named_parameters())  # the groups a resume re-adds, as they will be
        own_groups += [{"params": [named[name] for name in names]} for names in layout[len(own_groups) :]]
    if len(groups) != len(own_groups):
        return [
            f"the optimizer has {len(own_groups)} param groups, the checkpoint {len(groups)} (it records no "
            "param_layout to re-add groups by name): build the optimizer with the checkpoint's groups"
        ]
    problems = []
    params: dict[Any, torch.Tensor] = {}  # the checkpoint's parameter index -> this optimizer's parameter
    for i, (group, own) in enumerate(zip(groups, own_groups)):
        if len(group["params"]) != len(own["params"]):
            problems.append(
                f"param group {i} has {len(own['params'])} parameters in the optimizer, {len(group['params'])} in "
                "the checkpoint"
            )
        params.update(zip(group["params"], own["params"]))
    for index, entry in saved["state"].items():
        param = params.get(index)
        if param is None:
            problems.append(f"optimizer state {index!r} belongs to no parameter of any param group")
            continue
        for name, value in entry.items():
            if name in _PARAM_SHAPED and isinstance(value, torch.Tensor) and value.shape != param.shape:
                problems.append(
                    f"optimizer state {name!r} of parameter {index} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(param.shape)}"
                )
    return problems


def _position_problems(position: Any, n_epochs: int | None, max_steps: int | None, n_batches: int | None) -> list[str]:
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
            "pass a larger n_epochs to train further"
        ]
    if batch and n_batches is not None and batch > n_batches:
        return [
            f"it was taken {where}, but train_data now has {n_batches} batches per epoch; resume with the "
            "checkpointed run's train data"
        ]
    return []


def _pass_open(state: Mapping) -> bool:
    """Whether the checkpoint was taken with a pass over the train data open (mid-epoch, or mid-stream)."""
    position, data = state["position"], state.get("data")
    if isinstance(data, Mapping) and data.get("valid_every") is not None:
        ranks = data.get("ranks")
        return isinstance(ranks, list) and any(isinstance(r, Mapping) and r.get("batches") for r in ranks)
    return bool(isinstance(position, Mapping) and position.get("batch"))


def _order_is_seeded(state: Mapping, learner: Any) -> bool:
    """Whether the checkpointed run's train order came from a seed, not from each rank's RNG: ``Distributed``
    split the data (its samplers draw ``randperm(n)`` from ``seed + epoch``, so global batch ``k`` holds the same
    samples at every world size). Such a pass resumes at another world size: the new ranks skip the global
    batches done and take their parts of the next ones (``Distributed.check_state_dict`` refuses another seed)."""
    callbacks = state.get("callbacks")
    saved = callbacks.get("Distributed") if isinstance(callbacks, Mapping) else None
    splits = any(getattr(cb, "seeds_train_order", False) is True for cb in learner.callbacks)  # this run too
    return splits and isinstance(saved, Mapping) and saved.get("shard_data") is True


def _rng_problems(rng: Any, pass_open: bool, rank: int, world_size: int) -> list[str]:
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


def _few(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return f"{'entry' if len(keys) == 1 else 'entries'} {shown}{more}"


# ----------------------------------------------------------------------------------------------- building
def build_state(learner: Any, epoch: int, batch: int) -> dict[str, Any]:
    """The checkpoint state of ``learner`` at loop position ``(epoch, batch)`` (see the table above).

    ``Learner.state_dict`` calls it at a window boundary only: an accumulation window's gradients are not part of
    a checkpoint.
    """
    cursor = learner._data
    rng = {"now": capture_rng_state(), "phase_start": cursor.rng_at_start if cursor.is_open(batch) else None}
    ranks = all_gather({"rng": rng, "data": cursor.position(batch)})  # every rank's (a collective)
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
        "rng": rng_entry([r["rng"] for r in ranks]),
        "data": data_entry([r["data"] for r in ranks], cursor.per_epoch),
        "run": learner.run,
        "param_layout": param_layout(learner.optimizer, unwrap_model(learner.model)),
        "frozen": frozen_state(unwrap_model(learner.model)),
    }


def load_model_and_optimizer(state: Mapping[str, Any], learner: Any) -> None:
    """Load a checked state's model and optimizer entries, first re-adding the param groups the checkpointed run
    added during its fit (see :mod:`loopkit.loop.param_layout`)."""
    model = unwrap_model(learner.model)
    model.load_state_dict(state["model"])
    restore_frozen(state.get("frozen"), model)
    layout = state.get("param_layout")
    if layout is not None:
        readd_groups(layout, state["optimizer"]["param_groups"], learner.optimizer, model)
    learner.optimizer.load_state_dict(state["optimizer"])


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size (:mod:`loopkit.distributed.ranks`): from the process group, or from
    torchrun's variables when the checkpoint is checked before ``Distributed`` has built the group, else ``(0, 1)``."""
    return rank(), world_size()


def restore_group_options(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Set every param group's options (lr, momentum, ...) to the checkpoint's, as ``load_state_dict`` did: the
    resumed epoch's ``before_epoch`` handlers (a per-epoch Scheduler) may have written them again since. A
    tensor-valued option is filled in place."""
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        for key, value in saved_group.items():
            if key in ("params", "param_names") or key not in group:
                continue
            if isinstance(group[key], torch.Tensor):  # keep the tensor a captured graph or compiled step reads
                group[key].copy_(torch.as_tensor(value))
            else:
                group[key] = value


def replaces_train_data(learner: Any) -> bool:
    """Whether a callback declares it writes ``train_data`` (``Distributed`` shards it in ``before_fit``): the
    data a checkpoint is checked against before the fit is then not the data the fit iterates."""
    return any("train_data" in getattr(cb, "writes", ()) for cb in learner.callbacks)


def resumed_epoch_length(state: Any) -> int | None:
    """The batches of the epoch a mid-epoch checkpoint was taken in, as counted when that epoch began (a
    batch-size schedule may have changed the data's length since); None at an epoch's end or when not recorded."""
    position = state.get("position") if isinstance(state, Mapping) else None
    if not isinstance(position, Mapping) or not position.get("batch"):
        return None
    n = position.get("n_batches")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def data_of_this_rank(state: Mapping[str, Any], rank: int | None = None) -> Mapping[str, Any]:
    """Rank ``rank``'s (default: this process's) ``{"batches", "passes", "state", ...}`` data position from a
    checkpoint state (for a state without a ``data`` entry, the epoch's batches done)."""
    data = state.get("data")
    if data is None:
        return {"batches": state["position"]["batch"], "passes": 0, "state": None, "generators": None}
    if rank is None:
        rank, _ = rank_and_world_size()
    ranks = data["ranks"]
    return ranks[rank] if rank < len(ranks) else ranks[0]


def rng_of_this_rank(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """This rank's ``{"now", "phase_start"}`` generator snapshots from a checkpoint state."""
    rank, _ = rank_and_world_size()
    ranks = state["rng"]["ranks"]
    return ranks[rank] if rank < len(ranks) else ranks[0]
