"""Checkpoint: save everything a run needs to continue exactly, atomically; keep the last k and the best.

A checkpoint is ``learner.state_dict()``: model, optimizer, every callback's state (Scheduler included), the
RNG states (torch, numpy, python, CUDA) and the position in the loop. It is written with
:func:`loopkit.resume.file.save_atomic` (a temporary file renamed over the target, a SHA-256 checksum of
the content in the header), so a crash while saving leaves the previous file intact. The callback runs after
every other callback (``run_after=("*",)``), so the state it saves includes what they did for this batch.

What it deletes: only files it wrote itself into its own directory. Pruning (``keep_last``) removes periodic
checkpoints this run wrote there, and only once the save that supersedes them is complete; files named in a
checkpoint that was written into another directory (a resume from elsewhere) are never touched. A loaded
checkpoint is data, never an instruction: each run carries a random identity, saved in every checkpoint it
writes, and a file named by a loaded checkpoint is deleted only if it is a regular file (not a link) in this
directory, named as this callback names its files, and itself a checkpoint holding the same identity; anything
else is left alone. Temporary files left by killed saves are removed after a later completed save into the same
directory, and only those of writers on this host that are no longer running.

Resume with ``learner.fit(n_epochs, resume_from=checkpoint.last)`` or, in a new process,
``resume_from=Checkpoint.latest(dirpath)``.

**Sharded checkpoints.** A model sharded with FSDP2 (``Distributed(shard=...)``) is saved as a directory
``step-000000040.dcp/`` that every rank writes its own shards into (``torch.distributed.checkpoint``), complete
and checksummed or not visible (:mod:`loopkit.resume.sharded`); ``sharded=True`` does the same for a
DDP run. The same rules hold: ``keep_last``, ``best.dcp``, pruning only of what this run wrote. Such a
checkpoint resumes at any world size (the loaded tensors are cut into the new run's shards).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import stat
import warnings
from typing import Any

import torch

from .._validate import whole_number
from ..distributed import is_main_process, min_over_ranks
from ..loop.callback import Callback
from ..resume.file import CheckpointError, load_file, save_atomic, stale_temp_files, temp_path_for
from ..resume.load import load_checkpoint
from ..resume.model import unwrap_model
from ..resume.sharded import SUFFIX, is_sharded_checkpoint, save_sharded
from ._monitor import latest, monitored_metrics
from .fsdp import is_fully_sharded
from .validate_first import first_evaluation

_OWN_NAME = re.compile(r"(step-\d{9}|epoch-\d{4,})\.(pt|dcp)")  # the names _save gives periodic checkpoints
_IDENTITY = re.compile(r"[0-9a-f]{32}")


class Checkpoint(Callback):
    """Save checkpoints under ``dirpath``.

    Args:
        dirpath: directory for the files (created if missing). It must be writable when the fit starts.
        every_n_steps: also save after every this many optimizer steps (train batches), mid-epoch.
        every_epoch: save at the end of every epoch.
        keep_last: how many of the most recent periodic checkpoints to keep (older ones are deleted once a newer
            one is complete, so the directory needs room for ``keep_last + 1`` of them).
        monitor: a :class:`~loopkit.callbacks.metrics.Metrics` key (``"valid_loss"``, or any evaluation set's
            ``"<name>_loss"``); if given, the best epoch so far is also kept as ``best.pt``. A non-finite value is
            never the best. :class:`~loopkit.callbacks.validate_first.ValidateFirst`'s evaluation before
            training counts: the untrained model is the first best.
        mode: ``"min"`` or ``"max"``: whether a lower or a higher ``monitor`` is better.
        sharded: write sharded checkpoints (directories ``*.dcp``, every rank writing its shards) instead of
            one file; default None: sharded exactly when the model is sharded with FSDP2 when the fit starts.
            ``False`` with a sharded model is refused when the fit starts.

    Raises:
        ValueError: at construction, an ``every_n_steps`` or ``keep_last`` that is not a whole number >= 1, or an
            unknown ``mode``; when the Learner is built, a ``monitor`` without a ``Metrics`` callback, one that
            Metrics never produces (a typo), or a ``valid_*`` one without ``valid_data``.
        OSError: at the start of the fit, if ``dirpath`` cannot be written (naming it); at a save, if the file
            cannot be written (naming it and the cause, e.g. a full disk). The previous checkpoint stays intact.

    Weights or optimizer state that are not finite are never saved (a warning; the previous file stays and
    :attr:`refused` counts it). A non-finite loss or metric is not a reason to refuse: it is recorded in the
    checkpoint like any other value.
    """

    agrees_across_ranks = True  # saves at global steps every rank shares

    reads = ("model", "optimizer", "callbacks", "global_step", "epoch", "phase", "micro_batch", "metrics")
    run_after = ("*",)

    def __init__(
        self,
        dirpath: str | os.PathLike,
        *,
        every_n_steps: int | None = None,
        every_epoch: bool = True,
        keep_last: int = 2,
        monitor: str | None = None,
        mode: str = "min",
        sharded: bool | None = None,
    ) -> None:
        whole_number("Checkpoint", "every_n_steps", every_n_steps, optional=True)
        whole_number("Checkpoint", "keep_last", keep_last)
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint(mode={mode!r}): use 'min' or 'max'")
        self.dirpath = os.fspath(dirpath)
        self.every_n_steps, self.every_epoch, self.keep_last = every_n_steps, every_epoch, keep_last
        self.monitor, self.mode = monitor, mode
        self.saved: list[str] = []  # periodic checkpoints this run wrote into dirpath and keeps, oldest first
        self.best: tuple[float, str] | None = None
        self.refused = 0
        self._pruning: list[str] = []  # superseded files of ours, deleted once the next save is complete
        self._saved_step: int | None = None
        self.identity = secrets.token_hex(16)  # saved in every file this run writes: proof that it wrote it
        self._written: set[str] = set()  # files this process wrote (no proof needed)
        self.sharded = sharded
        self._suffix = ".pt"  # ".dcp" for sharded checkpoints, decided when the fit starts

    @property
    def last(self) -> str | None:
        """Path of the most recent complete periodic checkpoint, or None."""
        return self.saved[-1] if self.saved else None

    @staticmethod
    def latest(dirpath: str | os.PathLike, *, skip_damaged: bool = False) -> str | None:
        """The most recently written periodic checkpoint in ``dirpath`` (for a new process resuming a run).

        Args:
            skip_damaged: verify candidates newest first (header and SHA-256, reading each whole) and return
                the newest intact one; by default the newest file is returned unread, and a damaged one is
                reported when it is loaded.

        Returns:
            the path, or None when the directory holds no periodic checkpoint yet.

        Raises:
            FileNotFoundError: ``dirpath`` is not a directory (a typo would otherwise train from scratch).
        """
        dirpath = os.fspath(dirpath)
        if not os.path.isdir(dirpath):
            raise FileNotFoundError(
                f"Checkpoint.latest({dirpath!r}): no such directory; give the directory a Checkpoint saved into"
            )
        paths = [
            os.path.join(dirpath, f)
            for f in os.listdir(dirpath)
            if f.startswith(("step-", "epoch-"))
            and (f.endswith(".pt") or (f.endswith(SUFFIX) and is_sharded_checkpoint(os.path.join(dirpath, f))))
        ]
        paths.sort(key=lambda p: (os.stat(p).st_mtime_ns, os.path.basename(p)), reverse=True)
        if not skip_damaged:
            return paths[0] if paths else None
        for path in paths:
            try:
                load_checkpoint(path)
            except CheckpointError as error:
                warnings.warn(f"Checkpoint.latest: skipping a damaged file: {error}", RuntimeWarning, stacklevel=2)
                continue
            return path
        return None

    def check(self, learner: Any) -> None:
        if self.monitor is not None:  # a Metrics callback that produces this key, before any epoch is spent
            monitored_metrics(learner, self.monitor, "Checkpoint")

    def before_fit(self, learner: Any) -> None:
        self._saved_step = learner.global_step  # a resumed run saved this step already; a new one has none
        model_sharded = is_fully_sharded(learner.model)
        if model_sharded and self.sharded is False:
            raise ValueError(
                "Checkpoint(sharded=False) cannot save a model sharded with FSDP2 into one file (each rank holds "
                "only its shards): drop sharded=False to write sharded checkpoints"
            )
        self._suffix = SUFFIX if self.sharded or model_sharded else ".pt"
        # A directory that cannot take a file fails now, not at the first save an epoch later. Every rank of a
        # sharded run writes into it (on node-local storage, each node's own).
        if not (is_main_process() or self._suffix == SUFFIX):
            return
        probe = temp_path_for(os.path.join(self.dirpath, "probe"))
        try:
            os.makedirs(self.dirpath, exist_ok=True)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            os.unlink(probe)
        except OSError as error:
            raise OSError(
                error.errno,
                f"Checkpoint cannot write to the directory {self.dirpath!r}: {error.strerror or error}; make it "
                "writable or pass another dirpath",
            ) from error

    def after_batch(self, learner: Any) -> None:
        # Once per optimizer step that happened, at a window boundary: with gradient accumulation the step
        # count repeats over a window's micro-batches, and a skipped step leaves it where it was.
        step = learner.global_step
        if (
            learner.phase == "train"
            and self.every_n_steps
            and step % self.every_n_steps == 0
            and step != self._saved_step
            and not learner.micro_batch
        ):
            self._saved_step = step
            self._save(learner, f"step-{step:09d}{self._suffix}")

    def before_epoch(self, learner: Any) -> None:
        first = first_evaluation(learner)  # ValidateFirst's evaluation of the untrained model counts for best
        if first is not None and self.monitor is not None and self.monitor in first:
            self._keep_if_best(learner, first[self.monitor])

    def after_epoch(self, learner: Any) -> None:
        if self.every_epoch:
            self._save(learner, f"epoch-{learner.epoch + 1:04d}{self._suffix}")
        if self.monitor is not None:
            self._keep_if_best(learner, latest(learner, self.monitor))

    def _keep_if_best(self, learner: Any, value: float) -> None:
        better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
        if better and math.isfinite(value):
            previous = self.best
            best = f"best{self._suffix}"
            self.best = (value, os.path.join(self.dirpath, best))  # the saved state says it is the best
            if not self._save(learner, best, periodic=False):
                self.best = previous

    def save(self, learner: Any) -> str | None:
        """Save a periodic checkpoint now, named after the global step; return its path (None if refused)."""
        name = f"step-{learner.global_step:09d}{self._suffix}"
        return os.path.join(self.dirpath, name) if self._save(learner, name) else None

    def _save(self, learner: Any, filename: str, periodic: bool = True) -> bool:
        if not self._finite(learner):
            self.refused += 1
            warnings.warn(
                f"Checkpoint: not saving {filename} at step {learner.global_step}: the weights or the optimizer "
                "state are not finite; the previous checkpoint is kept",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        path = os.path.join(self.dirpath, filename)
        before = self.saved, self._pruning
        if periodic:
            kept = [p for p in self.saved if p != path] + [path]
            # The state written includes what this save supersedes, so a run killed before deleting it
            # deletes it after its own next save.
            pruning = [p for p in self._pruning + kept[: -self.keep_last] if p != path]
            self.saved, self._pruning = kept[-self.keep_last :], pruning
        try:
            # Every rank builds the state (in a distributed run that gathers each rank's RNG state); rank 0
            # alone writes and prunes, and the other ranks keep the same lists.
            state = learner.state_dict()
            if self._suffix == SUFFIX:  # every rank writes its shards; rank 0 the rest
                save_sharded(state, learner.model, learner.optimizer, path)
            elif is_main_process():
                save_atomic(state, path)
            self._written.add(path)
        except BaseException:
            self.saved, self._pruning = before  # last still names the previous, intact file
            raise
        if is_main_process() or (self._suffix == SUFFIX and os.environ.get("LOCAL_RANK", "0") == "0"):
            self._remove_superseded()  # a sharded run's: on every node, whose directory may be its own
        self._pruning = []
        return True

    def _remove_superseded(self) -> None:
        for old in self._pruning:
            if old in self._written or self._wrote(old):
                _delete(old)
                self._written.discard(old)
        for old in stale_temp_files(self.dirpath):  # a dead writer's temp file (or a sharded save's temp directory)
            _delete(old)
        self._pruning = []

    def _wrote(self, path: str) -> bool:
        """Whether this run provably wrote ``path`` (a name a loaded checkpoint gave): a regular file directly in
        this directory, named as periodic checkpoints are, whose own Checkpoint state holds this run's identity."""
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode) or not _OWN_NAME.fullmatch(os.path.basename(path)):
                return False
            if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.dirpath):
                return False
            states = load_file(path).get("callbacks", {})
        except (OSError, CheckpointError):
            return False
        return isinstance(states, dict) and any(
            isinstance(s, dict) and s.get("identity") == self.identity for s in states.values()
        )

    def _finite(self, learner: Any) -> bool:
        # One host sync per save; saving syncs anyway.
        tensors = [_local(t) for t in unwrap_model(learner.model).state_dict().values() if t.is_floating_point()]
        for state in learner.optimizer.state.values():
            tensors += [_local(t) for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
        finite = not tensors or bool(
            torch.stack([torch.isfinite(t).all().to(tensors[0].device) for t in tensors]).all()
        )
        if self._suffix == SUFFIX:  # each rank sees its shards only: refused on one, refused on all
            finite = bool(min_over_ranks(int(finite)))
        return finite

    def state_dict(self) -> dict[str, Any]:
        # Names, not paths: a run resumed elsewhere must not reach back into this directory.
        return {
            "identity": self.identity,
            "dirpath": os.path.realpath(self.dirpath),
            "saved": [os.path.basename(p) for p in self.saved],
            "pruning": [os.path.basename(p) for p in self._pruning],
            "best": None if self.best is None else {"value": self.best[0], "path": os.path.realpath(self.best[1])},
            "refused": self.refused,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.refused = state["refused"]
        best = state["best"]
        # The path of best.pt is this directory's, whatever the file says: a loaded path is never used.
        self.best = None if best is None else (best["value"], os.path.join(self.dirpath, "best.pt"))
        if os.path.realpath(self.dirpath) == state["dirpath"]:
            # The same run continues: it keeps its identity, and the files it lists are deleted only once each
            # is shown to carry that identity (_wrote).
            self.identity = state["identity"]
            self.saved = [os.path.join(self.dirpath, name) for name in state["saved"]]
            self._pruning = [os.path.join(self.dirpath, name) for name in state["pruning"]]
        else:
            # Resumed from another directory: its files are that run's, never this one's to prune.
            self.saved, self._pruning = [], []

    def check_state_dict(self, state: dict[str, Any], learner: Any) -> None:
        identity = state.get("identity")
        if not isinstance(identity, str) or not _IDENTITY.fullmatch(identity):
            raise ValueError(f"its run identity {str(identity)[:40]!r} is not 32 hex digits")
        lists = [state.get("saved"), state.get("pruning")]
        names = [n for x in lists if isinstance(x, list) for n in x]
        if not all(isinstance(x, list) for x in lists) or not all(isinstance(n, str) for n in names):
            raise ValueError("its file lists are not lists of file names")
        if any(not _OWN_NAME.fullmatch(n) for n in names):
            shown = [n[:60] for n in names[:5]]
            raise ValueError(f"its file list {shown} holds names Checkpoint never writes (step-N.pt, epoch-N.pt, .dcp)")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (a ``DTensor``); any other tensor as it is."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def _delete(path: str) -> None:
    """Delete a checkpoint this run wrote: a file, or a sharded checkpoint's directory (never through a link)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
