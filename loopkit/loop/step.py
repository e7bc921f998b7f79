"""What one batch means: how to unpack it, run the model on it, and compute the loss.

The Learner fires its events around these three calls, so a custom :class:`Step` changes what happens
inside a batch without losing any event::

    before_batch -> unpack -> forward -> after_pred -> loss -> after_loss -> backward -> ...

Subclass and override any of the three methods; each receives the learner (read ``learner.xb``,
``learner.yb``, ``learner.pred``, ``learner.model``, ``learner.loss_fn``, ...).

Example: a two-headed model trained on the sum of two losses.
    >>> import torch
    >>> class TwoLossStep(Step):
    ...     def loss(self, learner):
    ...         main, aux = learner.pred
    ...         return learner.loss_fn(main, learner.yb) + 0.1 * learner.loss_fn(aux, learner.yb)
    >>> class TwoHeads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    ...     def forward(self, x):
    ...         return self.a(x), self.b(x)
    >>> from loopkit import Learner
    >>> model = TwoHeads()
    >>> data = [(torch.randn(4, 2), torch.randn(4, 1))] * 3
    >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1),
    ...                   torch.nn.functional.mse_loss, step=TwoLossStep())
    >>> learner.fit(1).global_step
    3
"""

from __future__ import annotations

from typing import Any

import torch


class Step:
    """The default step: ``batch = (xb, yb)``, ``pred = model(xb)``, ``loss = loss_fn(pred, yb)``.

    Subclass it and override any of :meth:`unpack`, :meth:`forward` and :meth:`loss` for batches of another
    shape (a dict, an ``(x, y, weight)`` triple) or models that take several inputs; pass the instance as
    ``Learner(..., step=...)``. The loss must be a 0-dim tensor (a scalar) with a gradient.
    """

    def unpack(self, learner: Any, batch: Any) -> tuple[Any, Any]:
        """Split a batch into model input and target, moved to ``learner.device`` when one is set."""
        xb, yb = batch
        device = learner.device
        if device is not None:
            xb, yb = to_device(xb, device), to_device(yb, device)
        return xb, yb

    def forward(self, learner: Any) -> Any:
        """Return the model's prediction for ``learner.xb``."""
        return learner.model(learner.xb)

    def loss(self, learner: Any) -> torch.Tensor:
        """Return the scalar loss of ``learner.pred`` against ``learner.yb``."""
        return learner.loss_fn(learner.pred, learner.yb)


def to_device(value: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors inside a tuple, list or dict, to ``device`` without blocking the host."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
