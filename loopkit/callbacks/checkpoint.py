"""Checkpoint: save everything a run needs to continue exactly, atomically; keep the last k and the best.

A checkpoint is ``learner.state_dict()``: model, optimizer, every callback's state (Scheduler included), the
RNG states (torch, numpy, python, CUDA) and the position in the loop. It is written with
:func:`loopkit.checkpoint.save_atomic`, so a crash while saving leaves the previous file intact. Weights or a
loss that are not finite are never saved (the previous good checkpoint stays). The callback runs after every
other callback (``run_after=("*",)``), so the state it saves includes what they did for this batch.

Resume with ``learner.fit(n_epochs, resume_from=checkpoint.last)``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch

from .._validate import whole_number
from ..distributed import is_main_process
from ..loop.callback import Callback
from ..loop.checkpoint import save_atomic
from .metrics import Metrics


class Checkpoint(Callback):
    """Save checkpoints under ``dirpath``.

    Args:
        dirpath: directory for the files (created if missing).
        every_n_steps: also save after every this many optimizer steps (train batches), mid-epoch.
        every_epoch: save at the end of every epoch.
        keep_last: how many of the most recent periodic checkpoints to keep (older ones are deleted).
        monitor: a :class:`~loopkit.callbacks.metrics.Metrics` key (``"valid_loss"``); if given, the best epoch
            so far is also kept as ``best.pt``.
        mode: ``"min"`` or ``"max"``: whether a lower or a higher ``monitor`` is better.

    Raises:
        ValueError: at construction, an ``every_n_steps`` or ``keep_last`` that is not a whole number >= 1, or an
            unknown ``mode``; when the Learner is built, a ``monitor`` without a ``Metrics`` callback.
    """

    reads = ("model", "optimizer", "callbacks", "global_step", "epoch", "phase", "loss", "micro_batch")
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
    ) -> None:
        whole_number("Checkpoint", "every_n_steps", every_n_steps, optional=True)
        whole_number("Checkpoint", "keep_last", keep_last)
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint(mode={mode!r}): use 'min' or 'max'")
        self.dirpath = os.fspath(dirpath)
        self.every_n_steps, self.every_epoch, self.keep_last = every_n_steps, every_epoch, keep_last
        self.monitor, self.mode = monitor, mode
        self.saved: list[str] = []
        self.best: tuple[float, str] | None = None
        self.refused = 0

    @property
    def last(self) -> str | None:
        """Path of the most recent checkpoint, or None."""
        return self.saved[-1] if self.saved else None

    @staticmethod
    def latest(dirpath: str | os.PathLike) -> str | None:
        """The most recently written periodic checkpoint in ``dirpath`` (for a new process resuming a run)."""
        dirpath = os.fspath(dirpath)
        if not os.path.isdir(dirpath):
            return None
        paths = [
            os.path.join(dirpath, f)
            for f in os.listdir(dirpath)
            if f.endswith(".pt") and f.startswith(("step-", "epoch-"))
        ]
        return max(paths, key=lambda p: os.stat(p).st_mtime_ns, default=None)

    def check(self, learner: Any) -> None:
        if self.monitor is not None and not any(isinstance(cb, Metrics) for cb in learner.callbacks):
            raise ValueError(f"Checkpoint(monitor={self.monitor!r}) needs a Metrics callback in the Learner")

    def after_batch(self, learner: Any) -> None:
        if (
            learner.phase == "train"
            and self.every_n_steps
            and learner.micro_batch == 0  # at an accumulation window's boundary, after its step
            and learner.global_step % self.every_n_steps == 0
        ):
            self._save(learner, f"step-{learner.global_step:09d}.pt")

    def after_epoch(self, learner: Any) -> None:
        if self.every_epoch:
            self._save(learner, f"epoch-{learner.epoch + 1:04d}.pt")
        if self.monitor is not None:
            metrics = next(cb for cb in learner.callbacks if isinstance(cb, Metrics))
            value = metrics.latest(self.monitor)
            better = self.best is None or (value < self.best[0] if self.mode == "min" else value > self.best[0])
            if better and math.isfinite(value):
                path = os.path.join(self.dirpath, "best.pt")
                self.best = (value, path)
                if not self._save(learner, "best.pt", periodic=False):
                    self.best = None

    def _save(self, learner: Any, filename: str, periodic: bool = True) -> bool:
        if not self._finite(learner):
            self.refused += 1
            warnings.warn(
                f"Checkpoint: not saving {filename} at step {learner.global_step}: the loss or the weights "
                "are not finite; the previous checkpoint is kept",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        path = os.path.join(self.dirpath, filename)
        dropped: list[str] = []
        if periodic:
            if path in self.saved:
                self.saved.remove(path)
            self.saved.append(path)
            dropped, self.saved = self.saved[: -self.keep_last], self.saved[-self.keep_last :]
        # The state includes this callback's own list, so a resumed run knows which files are its. Every rank
        # builds it (in a distributed run that gathers each rank's RNG state); rank 0 alone writes and prunes.
        state = learner.state_dict()
        if is_main_process():
            save_atomic(state, path)
            for old in dropped:
                if os.path.exists(old):
                    os.unlink(old)
        return True

    @staticmethod
    def _finite(learner: Any) -> bool:
        # One host sync per save; saving syncs anyway.
        tensors = list(learner.model.parameters())
        if learner.loss is not None:
            tensors.append(learner.loss.detach())
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved), "best": self.best, "refused": self.refused}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = list(state["saved"])
        self.best = state["best"]
        self.refused = state["refused"]
