"""A tqdm progress bar per epoch on a terminal, and one plain line per epoch everywhere else.

On a terminal (or when forced) a bar is drawn per train phase; the loss shown is read from the device every
``refresh_every`` steps, so the bar costs one host sync per that many steps, not per step. When the output is not
a terminal (a job under ``nohup``, CI, a log file) no bar is drawn, and instead one line is written per epoch:

    epoch 2 (3/10)  train_loss 0.4321  valid_loss 0.5012  valid_accuracy 0.8125  lr 0.001  time 12.3s

with the epoch's values from :class:`~loopkit.callbacks.metrics.Metrics` when there is one (else the last
batch's loss), the first param group's lr at the epoch's end, and the epoch's wall time. ``quiet`` silences
both. Only the main process writes (rank 0; :func:`loopkit.distributed.is_main_process`).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .._validate import whole_number
from ..distributed import is_main_process
from ..loop.callback import Callback


class ProgressBar(Callback):
    """Show a progress bar per epoch's train phase.

    Args:
        quiet: show nothing, neither bar nor lines.
        refresh_every: steps between reads of the loss for the bar's postfix.
        file: where to draw or write; default ``sys.stderr``. The bar is drawn only if it is a terminal,
            unless ``force``; otherwise a line per epoch is written there.
        force: draw the bar even when ``file`` is not a terminal (and write no lines).

    Raises:
        ValueError: a ``refresh_every`` that is not a whole number >= 1.
        TypeError: a ``quiet`` or ``force`` that is not a bool, a ``file`` without a ``write`` method.
    """

    agrees_across_ranks = True  # only draws; it cancels nothing

    reads = ("loss", "phase", "epoch", "n_epochs", "max_steps", "n_batches", "optimizer", "global_step", "metrics")
    run_after = ("Metrics",)

    def __init__(
        self, *, quiet: bool = False, refresh_every: int = 20, file: IO[str] | None = None, force: bool = False
    ) -> None:
        whole_number("ProgressBar", "refresh_every", refresh_every)
        for flag, value in (("quiet", quiet), ("force", force)):
            if not isinstance(value, bool):
                raise TypeError(f"ProgressBar({flag}={value!r}): pass True or False")
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(f"ProgressBar(file={file!r}): pass a text stream with a write method, or leave it out")
        self.quiet, self.refresh_every, self.file, self.force = quiet, refresh_every, file, force
        self.bar: Any = None  # a tqdm bar (tqdm ships no types) while a train phase runs

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn (a terminal, or forced, and not quiet)."""
        file = self.file if self.file is not None else sys.stderr
        return not self.quiet and is_main_process() and (self.force or (hasattr(file, "isatty") and file.isatty()))

    @property
    def lines(self) -> bool:
        """Whether a line is written per epoch instead (not a terminal, not forced, not quiet)."""
        return not self.quiet and not self.enabled

    def before_fit(self, learner: Any) -> None:
        self._main = is_main_process()

    def before_epoch(self, learner: Any) -> None:
        self._epoch_start = time.perf_counter()

    def after_epoch(self, learner: Any) -> None:
        if not (self.lines and self._main):
            return
        parts = [_epoch_label(learner)]
        row = learner.metrics  # the epoch's means, when Metrics is there
        if row.get("epoch") == learner.epoch:
            parts += [f"{key} {value:.4g}" for key, value in row.items() if key != "epoch"]
        elif learner.loss is not None:
            parts.append(f"loss {learner.loss.item():.4g}")  # one host read per epoch
        parts.append(f"lr {float(learner.optimizer.param_groups[0]['lr']):.4g}")
        parts.append(f"time {time.perf_counter() - self._epoch_start:.1f}s")
        file = self.file if self.file is not None else sys.stderr
        file.write("  ".join(parts) + "\n")
        file.flush()

    def before_train(self, learner: Any) -> None:
        if not self.enabled or not self._main:
            return
        from tqdm.auto import tqdm  # lazily: only when a bar is drawn

        self.bar = tqdm(
            total=learner.n_batches,
            desc=_epoch_label(learner),
            file=self.file if self.file is not None else sys.stderr,
            leave=True,
            dynamic_ncols=True,
        )

    def after_batch(self, learner: Any) -> None:
        if self.bar is None or learner.phase != "train":
            return
        self.bar.update(1)
        if learner.global_step % self.refresh_every == 0:
            self._postfix(learner)

    def after_train(self, learner: Any) -> None:
        if self.bar is not None:
            self._postfix(learner)
            self.bar.close()
            self.bar = None

    def after_fit(self, learner: Any) -> None:
        if self.bar is not None:  # an error or a cancel left it open
            self.bar.close()
            self.bar = None

    def _postfix(self, learner: Any) -> None:
        loss = learner.loss.item() if learner.loss is not None else float("nan")
        # refresh=False: the bar redraws at tqdm's own pace (mininterval); redrawing on every postfix update
        # would measure the terminal width of the whole line each time.
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{learner.optimizer.param_groups[0]['lr']:.3g}", refresh=False)


def _epoch_label(learner: Any) -> str:
    """``epoch 2 (3/10)``: the epoch's number counted from 0, as in ``Metrics.history``, run records and tables,
    then how far the fit is; with only a step budget (``fit(max_steps=N)``) ``epoch 2 (step 120/500)``."""
    if learner.n_epochs is not None:
        return f"epoch {learner.epoch} ({learner.epoch + 1}/{learner.n_epochs})"
    return f"epoch {learner.epoch} (step {learner.global_step}/{learner.max_steps})"
