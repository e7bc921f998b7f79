"""Sharded checkpoints: a directory every rank writes its own shards into, with ``torch.distributed.checkpoint``.

A sharded checkpoint ``step-000000040.dcp/`` holds:

=======================  ==============================================================================
``__<rank>_0.distcp``    each rank's shards of the model and the optimizer state (DCP's own format);
                         a tensor every rank holds whole (a DDP replica) is written once
``.metadata``            DCP's index: every tensor's global shape and where its pieces are
``loopkit.pt``           the rest of the checkpoint (position, callbacks, RNG, data; see
                         :mod:`loopkit.loop.learner_state`) written by rank 0 with :func:`save_atomic`, whose
                         ``sharded`` entry lists every other file with its SHA-256
=======================  ==============================================================================

**Complete or not visible.** Every rank writes into one hidden temporary directory beside the target (named by
rank 0 after its host and process, so an abandoned one is recognised as stale like a temporary file); each
rank hashes the files it wrote; the hashes are gathered, rank 0 writes ``loopkit.pt`` last, and only then is
the directory renamed to its name. A rank that fails anywhere fails the save on every rank: the temporary
directory is removed and the name never appears, so ``Checkpoint.last`` and ``Checkpoint.latest`` keep naming
the previous checkpoint.

**Loading reshards.** :func:`load_sharded` verifies every file's checksum, then reads the whole tensors (DCP
assembles each from the pieces whatever world size wrote them) into a state shaped as a single-file
checkpoint's, which :func:`loopkit.loop.learner_state.check_fits` checks and the Learner loads like any other. So a
checkpoint written by 2 ranks resumes on 1, 2 or 4; ``Distributed(shard=...)`` then cuts the loaded tensors
into this run's shards. Each rank holds the whole model and optimizer state in host memory while it loads
(not on the accelerator). The ``.metadata`` index is a pickle (DCP's format): it is read only after its
checksum matched the one ``loopkit.pt`` (a data-only file) lists.

Consolidate into one file for inference or export::

    python -m loopkit.resume.sharded step-000000040.dcp model.pt --model-only
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import torch

from ..distributed.collectives import all_gather
from ..distributed.ranks import is_distributed, rank
from .file import CheckpointError, load_file, save_atomic, temp_path_for

SHARDED_FORMAT = "loopkit-dcp-1"
STATE_FILE = "loopkit.pt"
SUFFIX = ".dcp"


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a sharded checkpoint directory (it holds a ``loopkit.pt``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, STATE_FILE))


# --------------------------------------------------------------------------------------------------- saving
def save_sharded(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Write ``state`` with ``model``'s and ``optimizer``'s tensors sharded, as the directory ``path``.

    A collective: every rank calls it with its own shards (``state`` is rank 0's to write; the other ranks'
    copy is ignored). ``path`` appears complete or not at all; an existing ``path`` (a ``best.dcp``) is replaced
    only once the new one is complete.

    Raises:
        OSError, RuntimeError: whatever failed on this rank or another (another rank's failure is named); no
            file is left behind and ``path`` is as it was.
    """
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.filesystem import FileSystemWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    path = os.path.abspath(path)
    temp = all_gather(temp_path_for(path))[0]  # rank 0's name, so it tells whose it is
    error: BaseException | None = None
    hashes: dict[str, str] = {}
    try:
        os.makedirs(temp, exist_ok=True)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        save({"model": model_state, "optimizer": optimizer_state}, storage_writer=FileSystemWriter(temp))
        mine = f"__{rank()}_"
        hashes = {name: _sha256(os.path.join(temp, name)) for name in os.listdir(temp) if name.startswith(mine)}
        if rank() == 0:
            hashes[".metadata"] = _sha256(os.path.join(temp, ".metadata"))
    except Exception as exc:  # reported to every rank below, so all fail together
        error = exc
    except CheckpointException as exc:  # DCP's own (a BaseException): a rank failed while writing
        error = RuntimeError(f"the sharded checkpoint {path!r} was not written: {exc}")
        error.__cause__ = exc
    outcomes = all_gather(None if error is None else f"{type(error).__name__}: {error}")
    failed = [(r, what) for r, what in enumerate(outcomes) if what is not None]
    if not failed:
        files: dict[str, str] = {}
        for entry in all_gather(hashes):
            files.update(entry)
        if rank() == 0:
            try:
                written = {**state, "model": SHARDED_FORMAT, "optimizer": SHARDED_FORMAT}
                written["sharded"] = {"format": SHARDED_FORMAT, "files": files}
                save_atomic(written, os.path.join(temp, STATE_FILE))
                _replace(temp, path)
            except Exception as exc:
                error = exc
        outcomes = all_gather(None if error is None else f"{type(error).__name__}: {error}")
        failed = [(r, what) for r, what in enumerate(outcomes) if what is not None]
    if failed:
        # Ours: every rank wrote into it, and none will again. One rank a node deletes it (ranks deleting one
        # tree at once race each other and leave parts of it); the all_gather above ordered it after every write.
        if int(os.environ.get("LOCAL_RANK", rank())) == 0:
            shutil.rmtree(temp, ignore_errors=True)
        all_gather(None)  # every rank returns once it is gone: no rank sees the failed save's files
        if error is not None:
            raise error
        r, what = failed[0]
        raise RuntimeError(f"the sharded checkpoint {path!r} was not written: rank {r} failed with {what}")
    # Node-local storage: each node has its own temporary directory; its first rank gives it the name too.
    if os.path.isdir(temp) and not os.path.exists(path):
        with contextlib.suppress(OSError):
            os.rename(temp, path)


def _replace(temp: str, path: str) -> None:
    if not os.path.exists(path):
        os.rename(temp, path)
        return
    aside = temp_path_for(path)  # the old one stays whole until the new one has its name
    os.rename(path, aside)
    os.rename(temp, path)
    shutil.rmtree(aside, ignore_errors=True)


def _sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# -------------------------------------------------------------------------------------------------- loading
def load_sharded(path: str | os.PathLike) -> dict[str, Any]:
    """A sharded checkpoint as a single-file checkpoint's state (whole tensors, on the CPU), verified.

    Reads every rank's shards, whichever world size wrote them, without any collective.

    Raises:
        FileNotFoundError: no sharded checkpoint at ``path``.
        CheckpointError: ``loopkit.pt`` damaged or not a sharded checkpoint's; a listed file missing (on
            node-local storage: gather every node's shards into one directory first) or changed since it was
            written (its SHA-256 differs).
    """
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    path = os.fspath(path)
    if not is_sharded_checkpoint(path):
        raise FileNotFoundError(f"no sharded checkpoint at {path!r}: a directory with a {STATE_FILE} is expected")
    state = load_file(os.path.join(path, STATE_FILE))
    sharded = state.get("sharded")
    if not isinstance(sharded, Mapping) or sharded.get("format") != SHARDED_FORMAT:
        raise CheckpointError(f"{path!r} holds a {STATE_FILE} that is not a {SHARDED_FORMAT} checkpoint's")
    files = sharded.get("files")
    if not isinstance(files, Mapping) or ".metadata" not in files:
        raise CheckpointError(f"{path!r}: its {STATE_FILE} lists no shard files")
    for name, digest in files.items():
        if os.path.basename(name) != name:
            raise CheckpointError(f"{path!r}: its file list names {name!r}, not a file in the directory")
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(
                f"{path!r} lacks {name}, one of its shards: on node-local storage, copy every node's shards of "
                "this checkpoint into one directory before resuming"
            )
        if _sha256(file) != digest:
            raise CheckpointError(f"{file!r} changed since it was written (its SHA-256 differs): it cannot be used")
    tensors: dict[str, Any] = {}
    # Every tensor whole, in one process: what torch's own dcp_to_torch_save does (the public load fills only
    # the keys a given state_dict already has, and a resharding load does not know them beforehand).
    _load_state_dict(tensors, storage_reader=FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    state = dict(state)
    del state["sharded"]
    state["model"] = tensors["model"]
    state["optimizer"] = _indexed(tensors["optimizer"])
    return state


def _indexed(optimizer_state: Mapping[str, Any]) -> dict[str, Any]:
    """DCP's optimizer state (keyed by parameter names) as ``optimizer.state_dict()`` keys it (by position)."""
    groups = optimizer_state.get("param_groups", [])
    order = [name for group in groups for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return {
        "state": {index[name]: dict(value) for name, value in optimizer_state.get("state", {}).items()},
        "param_groups": [{**group, "params": [index[n] for n in group["params"]]} for group in groups],
    }


# ---------------------------------------------------------------------------------------------- whole state
def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s whole ``state_dict`` on the CPU of every rank, its shards gathered (a collective: every rank
    calls it).

    For a model that is not sharded it is the unwrapped module's ``state_dict`` (detached CPU copies).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_distributed():
        from .model import unwrap_model

        return {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # on every rank
    return {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}


def consolidate(path: str | os.PathLike, out: str | os.PathLike, *, model_only: bool = False) -> str:
    """Write the sharded checkpoint ``path`` as one file ``out`` (atomically); return ``out``.

    Args:
        model_only: write the model's ``state_dict`` alone with ``torch.save`` (for inference and export:
            ``model.load_state_dict(torch.load(out))``); by default the whole checkpoint in loopkit's file
            format, which ``fit(resume_from=out)`` resumes like the directory.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_sharded`; FileExistsError: ``out`` exists.
    """
    out = os.fspath(out)
    if os.path.exists(out):
        raise FileExistsError(f"{out!r} exists; consolidate writes a new file, pass another path")
    state = load_sharded(path)
    if model_only:
        temp = temp_path_for(out)
        try:
            torch.save(state["model"], temp)
            os.replace(temp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    else:
        save_atomic(state, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m loopkit.resume.sharded SRC OUT [--model-only]``: :func:`consolidate` as a command."""
    parser = argparse.ArgumentParser(
        prog="python -m loopkit.resume.sharded",
        description="Consolidate a sharded (DCP) loopkit checkpoint into one file.",
    )
    parser.add_argument("source", help="the sharded checkpoint directory (step-....dcp)")
    parser.add_argument("out", help="the file to write (must not exist)")
    parser.add_argument("--model-only", action="store_true", help="write the model's state_dict alone (torch.save)")
    args = parser.parse_args(argv)
    try:
        consolidate(args.source, args.out, model_only=args.model_only)
    except (OSError, CheckpointError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
