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

from collections.abc import Callable
from typing import Any

import torch


class Step:
    """The default step: ``batch = (xb, yb)``, ``pred = model(xb)``, ``loss = loss_fn(pred, yb)``.

    Without a ``loss_fn`` (``Learner(..., loss_fn=None)``) the model computes its own loss, as nanoGPT's and
    Hugging Face models do: ``pred = model(xb, yb)`` (``model(xb)`` for inputs alone, in ``predict``) and the
    loss is ``pred.loss``, or the last element of a tuple such as nanoGPT's ``(logits, loss)``. A model that
    takes its targets another way (``model(**xb, labels=yb)``) overrides :meth:`forward`.

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
        """Return the model's prediction for ``learner.xb`` (given ``learner.yb`` too when it owns the loss)."""
        if learner.loss_fn is None and learner.yb is not None:
            return learner.model(learner.xb, learner.yb)
        return learner.model(learner.xb)

    def loss(self, learner: Any) -> torch.Tensor:
        """Return the scalar loss of ``learner.pred`` against ``learner.yb``, or the one the model computed.

        Raises:
            TypeError: without a ``loss_fn``, a model output that carries no loss.
        """
        if learner.loss_fn is not None:
            return learner.loss_fn(learner.pred, learner.yb)
        pred = learner.pred
        loss = getattr(pred, "loss", None)
        if loss is None and isinstance(pred, (tuple, list)) and pred:
            loss = pred[-1]
        if not isinstance(loss, torch.Tensor):
            raise TypeError(
                f"the Learner has no loss_fn, so the model must compute its loss: return an output with a .loss "
                f"or a tuple ending with the loss, such as (logits, loss); got {type(pred).__name__}"
            )
        return loss


class RecurrentStep(Step):
    """The step of a stateful recurrent model: a hidden state carried across batches, fresh at each phase.

    For a model called as ``model(xb, hidden) -> (pred, hidden)`` (pytorch/examples' word language model):
    at the first batch of every train, valid or validate/predict pass the state is ``init_hidden(n)`` (``n``:
    the batch's size, dimension ``batch_dim`` of ``xb``); each later batch starts from the previous batch's state, detached so that
    backpropagation stops at the batch's start (truncated BPTT, the script's ``repackage_hidden``). The
    state is a tensor or a tuple of tensors (an LSTM's ``(h, c)``). It is part of checkpoints
    (:meth:`state_dict`, the ``"step"`` section of :mod:`loopkit.resume.step`): a run resumed in the middle of
    an epoch starts its next batch from the state the killed run would have used, bit for bit.

    Args:
        init_hidden: ``init_hidden(batch_size)`` returns the initial state (``model.init_hidden`` in the
            script).
        batch_dim: the dimension of ``xb`` that is the batch (1 for the script's ``(seq_len, batch)`` input).

    Example:
        >>> class Tiny(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.rnn, self.out = torch.nn.RNN(2, 3, batch_first=True), torch.nn.Linear(3, 1)
        ...     def forward(self, x, h):
        ...         y, h = self.rnn(x, h)
        ...         return self.out(y), h
        >>> from loopkit import Learner
        >>> model = Tiny()
        >>> data = [(torch.randn(4, 5, 2), torch.randn(4, 5, 1))] * 3
        >>> step = RecurrentStep(lambda n: torch.zeros(1, n, 3))
        >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                   torch.nn.functional.mse_loss, step=step)
        >>> learner.fit(2).global_step
        6
    """

    def __init__(self, init_hidden: Callable[[int], Any], *, batch_dim: int = 0) -> None:
        if not callable(init_hidden):
            raise TypeError(f"RecurrentStep(init_hidden={init_hidden!r}) needs a function of the batch size")
        if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or batch_dim < 0:
            raise ValueError(f"RecurrentStep(batch_dim={batch_dim!r}) needs a dimension index >= 0")
        self.init_hidden, self.batch_dim = init_hidden, batch_dim
        self.hidden: Any = None
        self._pass: tuple[Any, int] | None = None  # (phase, epoch) of the pass the state belongs to
        self._restored = False  # hidden was loaded from a checkpoint (on the CPU)

    def forward(self, learner: Any) -> Any:
        """Run ``model(xb, hidden)``; keep the new state for the next batch of this pass."""
        this_pass = (learner.phase, learner.epoch)
        if self._pass != this_pass or learner.batch_idx == 0:  # a new pass: a fresh state
            self.hidden = self.init_hidden(int(learner.xb.shape[self.batch_dim]))
            self._pass = this_pass
        elif self._restored:  # loaded from a checkpoint on the CPU: follow the batches to their device
            self.hidden = to_device(self.hidden, learner.xb.device)
        self._restored = False
        pred, hidden = learner.model(learner.xb, _detached(self.hidden))
        self.hidden = hidden
        return pred

    def state_dict(self) -> dict[str, Any]:
        """``{"hidden": the state for the next batch (detached), "pass": [phase, epoch] it belongs to}``."""
        hidden = None if self.hidden is None else _detached(self.hidden)
        return {"hidden": hidden, "pass": None if self._pass is None else list(self._pass)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a :meth:`state_dict`: the next batch of the same pass continues from its hidden state."""
        self.hidden = state["hidden"]
        self._pass = None if state["pass"] is None else (state["pass"][0], int(state["pass"][1]))
        self._restored = self.hidden is not None


def _detached(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(_detached(s) for s in state)


def to_device(value: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors inside a tuple, list or dict, to ``device`` without blocking the host."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
