"""A tqdm progress bar per epoch showing the loss and learning rate.

Quiet when the output is not a terminal (logs and CI stay clean) or when asked. The loss shown is read from
the device every ``refresh_every`` steps, so the bar costs one host sync per that many steps, not per step.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from .._validate import whole_number
from ..distributed import is_main_process
from ..loop.callback import Callback


class ProgressBar(Callback):
    """Show a progress bar per epoch's train phase.

    Args:
        quiet: never show a bar.
        refresh_every: steps between reads of the loss for the bar's postfix.
        file: where to draw; default ``sys.stderr``. The bar is shown only if it is a terminal, unless ``force``.
        force: draw even when ``file`` is not a terminal (for logs that want it anyway).

    Raises:
        ValueError: a ``refresh_every`` that is not a whole number >= 1.
    """

    reads = ("loss", "phase", "epoch", "n_epochs", "n_batches", "optimizer", "global_step")

    def __init__(
        self, *, quiet: bool = False, refresh_every: int = 20, file: IO[str] | None = None, force: bool = False
    ) -> None:
        whole_number("ProgressBar", "refresh_every", refresh_every)
        self.quiet, self.refresh_every, self.file, self.force = quiet, refresh_every, file, force
        self.bar: Any = None  # a tqdm bar (tqdm ships no types) while a train phase runs

    @property
    def enabled(self) -> bool:
        file = self.file if self.file is not None else sys.stderr
        return not self.quiet and is_main_process() and (self.force or (hasattr(file, "isatty") and file.isatty()))

    def before_train(self, learner: Any) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm  # lazily: only when a bar is drawn

        self.bar = tqdm(
            total=learner.n_batches,
            desc=f"epoch {learner.epoch + 1}/{learner.n_epochs}",
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
