"""Agreed decisions: every rank takes the same outcome at the events where the loop's course is decided.

A rank that stops (or skips a phase) alone leaves the others waiting in their next collective, so at the
phase-level events (``before_fit``, ``before_epoch``, ``before_train``, ``after_train``, ``before_valid``,
``after_valid``, ``after_epoch``) the outcome of each event (nothing, a cancel, or an error) is agreed in one
all-reduce of one integer per rank: an error on any rank wins (the others raise :class:`RankFailedError` naming
it), else the outermost cancel any rank raised takes effect on every rank. That is 7 small collectives an epoch.

The batch-level events of the train phase are agreed the same way, one collective per event and step, for
each event a callback handles that does not declare ``agrees_across_ranks = True``; loopkit's own callbacks
declare it, as their decisions are alike by construction (NaNGuard and Preemption agree themselves,
``max_time`` agrees the clock, ``max_steps`` and the scheduled values follow ``global_step``, a loss scaler's
skip reads gradients DDP has already averaged). Validation batches are never agreed one by one (ranks may hold
different numbers of them): a rank's cancel there is carried to the agreed ``after_valid``.

Example (a single process: the outcome is the local one):
    >>> from loopkit.loop.events import CancelEpoch
    >>> stop = CancelEpoch()
    >>> agree("after_epoch", stop) is stop, agree("after_epoch", None)
    (True, None)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..distributed.collectives import collective_device
from ..distributed.ranks import is_distributed, rank, world_size
from .events import Cancel, CancelBatch, CancelEpoch, CancelFit, CancelPhase, CancelStep

#: Events whose outcome every rank agrees on in a distributed run (after_fit is not: an error may have left
#: other ranks inside a collective, so teardown runs no collective).
AGREED_EVENTS = frozenset(
    {"before_fit", "before_epoch", "before_train", "after_train", "before_valid", "after_valid", "after_epoch"}
)

_CANCELS = {cls.level: cls for cls in (CancelStep, CancelBatch, CancelPhase, CancelEpoch, CancelFit)}
_ERROR = max(_CANCELS) + 2  # above every cancel's code (a cancel's code is its level + 1; 0 is "nothing")


class RankFailedError(RuntimeError):
    """Another rank raised an error at an agreed event; this rank stops with it. That rank's output has the error."""


def agree(event: str, outcome: BaseException | None) -> BaseException | None:
    """The outcome every rank takes at ``event``, given this rank's (``None``: its handlers raised nothing).

    Without a process group (or in a world of one) it is ``outcome``. Otherwise a collective: every rank calls
    it at the same event.
    """
    if not (is_distributed() and world_size() > 1):
        return outcome
    if outcome is None:
        code = 0
    elif isinstance(outcome, Cancel):
        code = outcome.level + 1
    else:
        code = _ERROR
    codes = torch.zeros(world_size(), dtype=torch.int64, device=collective_device())
    codes[rank()] = code
    dist.all_reduce(codes)
    all_codes = codes.tolist()
    failed = [r for r, c in enumerate(all_codes) if c == _ERROR]
    if failed:
        if code == _ERROR:
            return outcome
        return RankFailedError(
            f"rank {failed[0]} raised an error in {event} (its traceback is in that rank's output); rank {rank()} "
            "stops with it"
        )
    top = max(all_codes)
    if top == 0:
        return None
    if code == top:
        return outcome
    return _CANCELS[top - 1](f"raised in {event} by rank {all_codes.index(top)}; agreed by every rank")
