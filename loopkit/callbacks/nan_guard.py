"""NaNGuard: stop cleanly on a non-finite loss, saying at which step.

Finiteness is accumulated on the device (no host sync) and read every ``check_every`` steps. With
``check_every=1`` (the default on the CPU, where reading is free) the check happens right after the loss is
computed, before backward, so the bad step never touches the weights. With ``check_every=N`` (the default
on a GPU is 50) a bad loss is noticed at the next multiple of N steps or the end of the train phase, whichever
comes first; the step reported is the first bad one, recorded on the device. :class:`Checkpoint` refuses to save
non-finite weights or loss in any case, so a good checkpoint is never replaced by a broken one.

In a distributed run each rank's loss is its own part of the batch; at each check the ranks agree (one
all-reduce of one integer) on the first step at which any of them saw a non-finite loss, and all stop there.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .._validate import whole_number
from ..distributed import min_over_ranks
from ..loop.callback import Callback
from ..loop.events import CancelFit


class NaNGuard(Callback):
    """Raise ``CancelFit`` when a training loss is NaN or infinite.

    Args:
        check_every: steps between host reads of the flag; ``None`` = 1 on the CPU, 50 elsewhere.

    Raises:
        ValueError: a ``check_every`` that is not a whole number >= 1 or None.

    Attributes:
        tripped_at: ``(epoch, batch_idx, global_step)`` of the first non-finite loss, or None.
    """

    agrees_across_ranks = True  # agrees its check itself (any_rank)

    reads = ("loss", "phase", "global_step", "epoch", "batch_idx")
    run_before = ("Checkpoint",)

    def __init__(self, check_every: int | None = None) -> None:
        whole_number("NaNGuard", "check_every", check_every, optional=True)
        self.check_every = check_every
        self.tripped_at: tuple[int, int, int] | None = None

    def before_fit(self, learner: Any) -> None:
        self.tripped_at = None
        self._first: torch.Tensor | None = None  # device-side: index of the first non-finite loss, or -1
        self._seen: torch.Tensor | None = None  # device-side: losses seen since the last check
        self._positions: list[tuple[int, int, int]] = []

    def after_loss(self, learner: Any) -> None:
        if learner.phase != "train":
            return
        loss = learner.loss.detach()
        if self._first is None or self._seen is None:
            self._first = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._seen = torch.zeros((), dtype=torch.int64, device=loss.device)
        # Device-side bookkeeping: the index (since the last check) of the first non-finite loss, or -1.
        self._first = torch.where(~torch.isfinite(loss) & (self._first < 0), self._seen, self._first)
        self._seen += 1
        self._positions.append((learner.epoch, learner.batch_idx, learner.global_step))
        every = self.check_every or (1 if loss.device.type == "cpu" else 50)
        if len(self._positions) >= every:
            self._check()

    def after_train(self, learner: Any) -> None:
        self._check()

    def _check(self) -> None:
        if self._first is None or self._seen is None or not self._positions:
            return
        index = int(self._first.item())  # the host read, once per check
        # Every rank checks at the same steps; in a distributed run they agree on the first bad step any rank
        # saw (one all-reduce per check), so all stop together instead of one stopping and the rest hanging.
        index = min_over_ranks(index if index >= 0 else len(self._positions))
        if index < len(self._positions):
            self.tripped_at = epoch, batch, step = self._positions[index]
            warnings.warn(
                f"NaNGuard: non-finite loss at epoch {epoch}, batch {batch} (global step {step}); training stopped",
                RuntimeWarning,
                stacklevel=2,
            )
            raise CancelFit
        self._positions.clear()
        self._seen.zero_()
