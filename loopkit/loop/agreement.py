"""Agreed decisions: every rank takes the same outcome at the events where the loop's course is decided.

A rank that stops (or skips a phase) alone leaves the others waiting in their next collective, so at the
phase-level events (``before_fit``, ``before_epoch``, ``before_train``, ``after_train``, ``before_valid``,
``after_valid``, ``after_epoch``) the outcome of each event (nothing, a cancel, or an error) is agreed in one
all-reduce of one integer per rank: an error on any rank wins (the others raise :class:`RankFailedError` naming
it), else the outermost cancel any rank raised takes effect on every rank. That is 7 small collectives an epoch.

The batch-level events of the train phase are agreed too, for each event a callback handles that does not
declare ``agrees_across_ranks = True``. Before the optimizer step (``before_batch`` to ``before_step``) a
cancel changes what this step computes (``CancelStep`` skips it on every rank), so the outcome is agreed at
the event, one blocking collective per event and step. **After the step** (``after_step``, ``after_batch``)
the outcome is agreed one step late (:func:`agree_late`): each rank posts its outcome in a non-blocking
all-reduce and collects it at the same event of the next step (or at ``after_train``, whichever comes first),
so the collective overlaps the next step's compute instead of stopping every rank each step. A cancel or an
error one rank raises there takes effect on every rank one step later than in a single process (a
``CancelFit`` in ``after_batch`` of step 3 stops the run after step 4); nothing that step computes can differ
between ranks because of it, as the outcome of an after-step event changes no gradient or weight.
Loopkit's own callbacks declare it, loopkit's own callbacks
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


#: Train batch-level events whose outcome is agreed one step late (see the module docs).
LATE_EVENTS = frozenset({"after_step", "after_batch"})

_pending: tuple[str, BaseException | None, torch.Tensor, dist.Work | None] | None = None  # one posted, uncollected


class RankFailedError(RuntimeError):
    """Another rank raised an error at an agreed event; this rank stops with it. That rank's output has the error."""


def agree(event: str, outcome: BaseException | None) -> BaseException | None:
    """The outcome every rank takes at ``event``, given this rank's (``None``: its handlers raised nothing).

    Without a process group (or in a world of one) it is ``outcome``. Otherwise a collective: every rank calls
    it at the same event. An outcome posted by :func:`agree_late` and not yet collected is collected here and
    taken with this event's (an error before a cancel, the outer cancel first); ``before_fit`` drops one left
    by an earlier fit.
    """
    if not (is_distributed() and world_size() > 1):
        return outcome
    global _pending
    if event == "before_fit":
        _pending = None
    late = _collect()
    codes, _ = _post(outcome, blocking=True)
    now = _decide(event, outcome, codes)
    return _stronger(late, now)


def agree_late(event: str, outcome: BaseException | None) -> BaseException | None:
    """Post this rank's outcome at ``event`` without waiting; return the outcome agreed for the previous
    posting (one step earlier), or ``None``. See the module docs: for the after-step events only.

    Without a process group (or in a world of one) it is ``outcome``, at once.
    """
    if not (is_distributed() and world_size() > 1):
        return outcome
    global _pending
    late = _collect()
    _pending = (event, outcome, *_post(outcome, blocking=False))
    return late


def _collect() -> BaseException | None:
    global _pending
    if _pending is None:
        return None
    (event, outcome, codes, work), _pending = _pending, None
    if work is not None:
        work.wait()
    return _decide(event, outcome, codes)


def _stronger(a: BaseException | None, b: BaseException | None) -> BaseException | None:
    """Of two agreed outcomes (alike on every rank), the one to raise: an error, else the outer cancel."""
    if a is None or b is None:
        return a if b is None else b
    level = {id(x): (2**10 if not isinstance(x, Cancel) else x.level) for x in (a, b)}
    return a if level[id(a)] >= level[id(b)] else b


def _post(outcome: BaseException | None, *, blocking: bool) -> tuple[torch.Tensor, dist.Work | None]:
    code = _code(outcome)
    codes = torch.zeros(world_size(), dtype=torch.int64, device=collective_device())
    codes[rank()] = code
    work = dist.all_reduce(codes, async_op=not blocking)
    return codes, work


def _decide(event: str, outcome: BaseException | None, codes: torch.Tensor) -> BaseException | None:
    """The agreed outcome, from every rank's code in ``codes`` (this rank's ``outcome`` among them)."""
    code = _code(outcome)
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


def _code(outcome: BaseException | None) -> int:
    if outcome is None:
        return 0
    if isinstance(outcome, Cancel):
        return outcome.level + 1
    return _ERROR
