"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; fastai's and Ignite's
``lr_find``): train for a few hundred steps while the learning rate grows exponentially, record the loss, stop
when it diverges, then put everything back.

:func:`lr_find` runs its own short fit on the learner's model, optimizer, data, step and device, with only the
callbacks the step needs (copies of the learner's ``MixedPrecision``, ``GradientAccumulation`` and
``GradientClip``, never its Checkpoint, TensorBoard or Metrics) plus the sweep itself. Afterwards the model's
weights and modes, the optimizer's state and param groups, and every random generator are restored bit for bit,
and the learner's own callbacks were never touched; with ``apply=True`` the suggested learning rate stays set in
the optimizer.

The suggestion rule: the learning rate where the smoothed loss falls fastest, i.e. the most negative slope of
the smoothed loss against ``log10(lr)`` (fastai's "steep" rule), searched from the end of the first tenth of the
sweep (the smoothing's warm-up) to the minimum of the smoothed loss. The loss is smoothed exponentially with
debiasing (``smoothing=0.95``, Ignite's default; fastai's 0.98 lags over short sweeps). ``result.lr_min`` (the minimum's learning rate divided by 10, fastai's other rule)
is reported too.

Example:
    >>> import torch
    >>> from loopkit import Learner
    >>> torch.manual_seed(0) and None
    >>> x = torch.randn(256, 4); y = x @ torch.tensor([[1.0], [-1.0], [2.0], [0.5]])
    >>> data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 256, 16)]
    >>> model = torch.nn.Linear(4, 1)
    >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.01), torch.nn.functional.mse_loss)
    >>> result = lr_find(learner, start_lr=1e-5, end_lr=10.0, num_steps=100)
    >>> 1e-3 < result.suggestion < 1.0
    True
    >>> learner.optimizer.param_groups[0]["lr"]  # restored
    0.01
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import whole_number
from ..loop.callback import Callback
from ..loop.events import CancelFit
from ..loop.learner import Learner
from ..resume.rng import capture_rng_state, restore_rng_state
from .gradient_accumulation import GradientAccumulation
from .gradient_clip import GradientClip
from .mixed_precision import MixedPrecision

#: The learner's callbacks the sweep's fit takes (as copies): the ones that define what a step is.
STEP_CALLBACKS = (MixedPrecision, GradientAccumulation, GradientClip)


@dataclass
class LRFinderResult:
    """What the range test saw.

    Attributes:
        lrs: the learning rate of each step taken (of the param group with the largest rate).
        losses: each step's loss (``learner.step_loss``, unscaled).
        smoothed: the exponentially smoothed, debiased losses the rule reads.
        suggestion: the learning rate the rule suggests (see the module docstring).
        lr_min: the learning rate at the smoothed loss's minimum, divided by 10.
        diverged: whether the sweep stopped because the loss diverged (or was not finite).
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = math.nan
    lr_min: float = math.nan
    diverged: bool = False

    def plot(self, path: str | os.PathLike | None = None) -> Any:
        """Draw loss against learning rate (log scale) with the suggestion marked; save a PNG to ``path``.

        Returns the matplotlib ``Figure``. Needs matplotlib (``pip install loopkit[plot]``).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError("LRFinderResult.plot needs matplotlib: pip install 'loopkit[plot]'") from error
        figure = Figure(figsize=(6, 4))
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        if math.isfinite(self.suggestion):
            ax.axvline(self.suggestion, color="red", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend()
        if path is not None:
            figure.savefig(os.fspath(path), format="png")
        return figure


class _Sweep(Callback):
    """Sets the exponential learning rate before each step and records the step's loss."""

    reads = ("step_loss", "global_step", "micro_batch", "phase")
    writes = ("optimizer.lr",)
    run_after = ("*",)

    def __init__(self, start: float, end: float, num_steps: int, smoothing: float, diverge: float) -> None:
        self.start, self.end, self.num_steps = start, end, num_steps
        self.smoothing, self.diverge = smoothing, diverge
        self.result = LRFinderResult()
        self._avg = 0.0
        self._best = math.inf

    def before_fit(self, learner: Any) -> None:
        groups = learner.optimizer.param_groups
        top = max(g["lr"] for g in groups)
        # Layer-wise rates keep their proportions: the sweep moves the largest group's rate.
        self._ratios = [g["lr"] / top if top > 0 else 1.0 for g in groups]

    def before_batch(self, learner: Any) -> None:
        if learner.phase != "train" or learner.micro_batch:
            return
        lr = self.start * (self.end / self.start) ** (learner.global_step / max(self.num_steps - 1, 1))
        for group, ratio in zip(learner.optimizer.param_groups, self._ratios):
            group["lr"] = lr * ratio
        self._lr = lr

    def after_step(self, learner: Any) -> None:
        loss = float(learner.step_loss.detach().float().item())  # the test needs each loss: one read per step
        result = self.result
        i = len(result.losses)
        result.lrs.append(self._lr)
        result.losses.append(loss)
        self._avg = self.smoothing * self._avg + (1 - self.smoothing) * loss
        smoothed = self._avg / (1 - self.smoothing ** (i + 1))
        result.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.diverge * self._best:
            result.diverged = True
            raise CancelFit
        self._best = min(self._best, smoothed)


def lr_find(
    learner: Learner,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.95,
    diverge: float = 4.0,
    apply: bool = False,
) -> LRFinderResult:
    """Run the learning-rate range test on ``learner``; see the module docstring.

    Args:
        learner: the Learner whose model, optimizer, data, step and device the test uses.
        start_lr: the sweep's first learning rate (0 < start_lr < end_lr), applied to the param group with the
            largest rate; other groups keep their ratio to it.
        end_lr: the sweep's last learning rate.
        num_steps: optimizer steps of the sweep (it stops earlier if the loss diverges); the data is
            re-iterated if it has fewer batches.
        smoothing: the loss's exponential smoothing factor, in [0, 1).
        diverge: stop when the smoothed loss exceeds this multiple of its minimum so far (> 1).
        apply: leave the suggested learning rate set in the optimizer (every group at its ratio).

    Returns:
        an :class:`LRFinderResult`.

    Raises:
        ValueError: a bad argument, or a sweep that recorded fewer than 3 steps (no suggestion can be made).
    """
    if not (isinstance(start_lr, (int, float)) and isinstance(end_lr, (int, float)) and 0 < start_lr < end_lr):
        raise ValueError(f"lr_find needs 0 < start_lr < end_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    whole_number("lr_find", "num_steps", num_steps, 3)
    if not 0 <= smoothing < 1:
        raise ValueError(f"lr_find(smoothing={smoothing!r}) needs a number in [0, 1)")
    if not diverge > 1:
        raise ValueError(f"lr_find(diverge={diverge!r}) needs a number > 1")
    model, optimizer = learner.model, learner.optimizer
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_modes = [(m, m.training) for m in model.modules()]
    saved_rng = capture_rng_state()
    sweep = _Sweep(float(start_lr), float(end_lr), num_steps, float(smoothing), float(diverge))
    callbacks = [copy.deepcopy(cb) for cb in learner.callbacks if isinstance(cb, STEP_CALLBACKS)]
    try:
        trial = Learner(
            model,
            learner.train_data,
            optimizer,
            learner.loss_fn,
            callbacks=[*callbacks, sweep],
            step=learner.step_logic,
            device=learner.device,
        )
        trial.fit(max_steps=num_steps)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        for module, training in saved_modes:
            module.training = training
        restore_rng_state(saved_rng)
    result = sweep.result
    _suggest(result)
    if apply:
        top = max(g["lr"] for g in optimizer.param_groups)
        for group in optimizer.param_groups:
            group["lr"] = result.suggestion * (group["lr"] / top if top > 0 else 1.0)
    return result


def _suggest(result: LRFinderResult) -> None:
    n = len(result.smoothed)
    if n < 3:
        raise ValueError(
            f"the range test recorded only {n} steps before the loss diverged; lower start_lr (got "
            f"{result.lrs[:1]}) or raise diverge"
        )
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    lrs = np.asarray(result.lrs, dtype=np.float64)
    finite = np.isfinite(smoothed)
    last = int(np.argmin(np.where(finite, smoothed, np.inf)))
    skip = min(n // 10, max(last - 2, 0))  # the first tenth is the smoothing's warm-up: noise, not signal
    end = max(last, skip + 2) + 1  # the slope needs at least three points
    slopes = np.gradient(smoothed[skip:end], np.log10(lrs[skip:end]))
    result.suggestion = float(lrs[skip + int(np.argmin(slopes))])
    result.lr_min = float(lrs[last] / 10)
