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
the outcome is agreed one step late (:func:`agree_late`): each rank posts its outcome and collects it at the
same event of the next step (or at the next phase-level event, whichever comes first; each event's posting on
its own). Under DDP, ``Distributed`` registers :func:`carry_in_gradients_hook`, and the posting rides in the
next step's gradient all-reduce (no collective of its own; where no gradient all-reduce comes before the
collection, as in the micro-batches of an accumulation window, the ranks reduce it then); otherwise it is a
non-blocking all-reduce that overlaps the next step's compute. A cancel or an error one rank raises there
takes effect on every rank one step later than in a single process (a ``CancelFit`` in ``after_batch`` of
step 3 stops the run after step 4); nothing that step computes can differ between ranks because of it, as the
outcome of an after-step event changes no gradient or weight. Loopkit's own callbacks declare
``agrees_across_ranks``, as their decisions are alike by construction (NaNGuard and Preemption agree
themselves, ``max_time`` agrees the clock, ``max_steps`` and the scheduled values follow ``global_step``, a
loss scaler's skip reads gradients DDP has already averaged). Validation batches are never agreed one by one
(ranks may hold different numbers of them): a rank's cancel there is carried to the agreed ``after_valid``.

Example (a single process: the outcome is the local one):
    >>> from loopkit.loop.events import CancelEpoch
    >>> stop = CancelEpoch()
    >>> agree("after_epoch", stop) is stop, agree("after_epoch", None)
    (True, None)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from ..distributed.collectives import collective_device
from ..distributed.ranks import is_distributed, rank, world_size
from .callback import handled_events
from .events import Cancel, CancelBatch, CancelEpoch, CancelFit, CancelPhase, CancelStep

#: Events whose outcome every rank agrees on in a distributed run (after_fit is not: an error may have left
#: other ranks inside a collective, so teardown runs no collective).
AGREED_EVENTS = frozenset(
    {"before_fit", "before_epoch", "before_train", "after_train", "before_valid", "after_valid", "after_epoch"}
)

_CANCELS = {cls.level: cls for cls in (CancelStep, CancelBatch, CancelPhase, CancelEpoch, CancelFit)}
_ERROR = max(_CANCELS) + 2  # above every cancel's code (a cancel's code is its level + 1; 0 is "nothing")


#: Train batch-level events whose outcome is agreed one step late (see the module docs), in the order of their
#: slots in the carrier's tail.
LATE_EVENTS = ("after_step", "after_batch")


class _Posted:
    """One rank's outcome at an after-step event, posted and not yet collected: its codes, reduced by a
    non-blocking all-reduce (``work``) or by the carrier (``state``: ``"waiting"``, ``"sent"``, ``"carried"``)."""

    __slots__ = ("codes", "outcome", "state", "work")

    def __init__(self, outcome: BaseException | None, carried: bool) -> None:
        self.outcome = outcome
        self.codes, self.work = (_codes(outcome), None) if carried else _post(outcome, blocking=False)
        self.state = "waiting" if carried else None


_pending: dict[str, _Posted] = {}  # by event: the outcome it posted one step ago, uncollected

# The carrier (a DDP communication hook, :func:`carry_in_gradients_hook`, which Distributed registers): posted
# after-step codes ride along in the next step's gradient all-reduce instead of a collective of their own.
_carrier = False  # whether the hook is registered for the running fit


class RankFailedError(RuntimeError):
    """Another rank raised an error at an agreed event; this rank stops with it. That rank's output has the error."""


def agree(event: str, outcome: BaseException | None) -> BaseException | None:
    """The outcome every rank takes at ``event``, given this rank's (``None``: its handlers raised nothing).

    Without a process group (or in a world of one) it is ``outcome``. Otherwise a collective: every rank calls
    it at the same event. Outcomes posted by :func:`agree_late` and not yet collected are collected here and
    taken with this event's (an error before a cancel, the outer cancel first); ``before_fit`` drops those left
    by an earlier fit.
    """
    if not (is_distributed() and world_size() > 1):
        return outcome
    if event == "before_fit":
        _pending.clear()
    late = None
    for late_event in list(_pending):
        late = _stronger(late, _collect(late_event))
    codes, _ = _post(outcome, blocking=True)
    now = _decide(event, outcome, codes)
    return _stronger(late, now)


def agree_late(event: str, outcome: BaseException | None) -> BaseException | None:
    """Post this rank's outcome at ``event`` without waiting; return the outcome agreed for this event's previous
    posting (one step earlier), or ``None``. See the module docs: for the after-step events only.

    Without a process group (or in a world of one) it is ``outcome``, at once.
    """
    if not (is_distributed() and world_size() > 1):
        return outcome
    late = _collect(event)
    _pending[event] = _Posted(outcome, carried=_carrier)  # the carrier sends it with the next gradients
    return late


def _collect(event: str) -> BaseException | None:
    posted = _pending.pop(event, None)
    if posted is None:
        return None
    codes = posted.codes
    if posted.work is not None:
        posted.work.wait()
    elif posted.state != "carried":
        # No gradient all-reduce ran since the posting (a micro-batch under accumulation, a skipped step): every
        # rank knows it alike, and all of them reduce the codes now.
        posted.state = "sent"  # the carrier must not send it any more
        codes, _ = _post(posted.outcome, blocking=True)
    return _decide(event, posted.outcome, codes)


def needs_late_agreement(callbacks: Iterable[object]) -> bool:
    """Whether a callback handles an after-step event without declaring ``agrees_across_ranks``: only then
    has the carrier anything to carry."""
    return any(
        not getattr(cb, "agrees_across_ranks", False) and event in handled_events(cb)
        for cb in callbacks
        for event in LATE_EVENTS
    )


def use_carrier(on: bool) -> None:
    """Whether after-step outcomes ride in the gradient all-reduce (:func:`carry_in_gradients_hook`, registered
    on the DDP model of this fit) or take a non-blocking all-reduce of their own. Distributed sets it."""
    global _carrier
    _carrier = on


def carry_in_gradients_hook(process_group: dist.ProcessGroup | None, bucket: Any) -> torch.futures.Future:
    """A DDP communication hook (``DistributedDataParallel.register_comm_hook(None, hook)``): torch's default
    all-reduce of every gradient bucket (``allreduce_hook``: divide by the world size, sum), with the first bucket
    (at most 1 MiB by DDP's default) followed by a tail of ``len(LATE_EVENTS) * world_size`` numbers: each
    after-step event's slot holds the outcome codes posted there since the last all-reduce, or zeros. So agreeing
    on them costs no collective of its own. The tail is there at every step, whether anything waits or not, so
    the all-reduce splits its buffer the same way at every step, in an uninterrupted run and a resumed one.
    """
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    if bucket.index() != 0:
        return allreduce_hook(process_group, bucket)  # type: ignore[arg-type]  # None: the default group
    group = process_group if process_group is not None else dist.group.WORLD
    width = dist.get_world_size(group)
    buffer = bucket.buffer()
    n = buffer.numel()
    tail = torch.zeros(len(LATE_EVENTS) * width, dtype=buffer.dtype, device=buffer.device)
    waiting = {}
    for slot, event in enumerate(LATE_EVENTS):
        posted = _pending.get(event)
        if posted is not None and posted.state == "waiting":
            tail[slot * width : (slot + 1) * width] = posted.codes
            posted.state, waiting[slot] = "sent", posted

    def done(fut: torch.futures.Future) -> torch.Tensor:
        out = fut.value()[0]
        for slot, posted in waiting.items():  # small integers, one per rank: exact in any float type
            summed = out[n + slot * width : n + (slot + 1) * width]
            posted.codes.copy_(summed.round().to(posted.codes.dtype))
            posted.state = "carried"
        buffer.copy_(out[:n])
        return buffer

    joined = torch.cat([buffer / width, tail])
    return dist.all_reduce(joined, group=group, async_op=True).get_future().then(done)


# DDP checks a hook's annotations as objects; under ``from __future__ import annotations`` they are strings.
carry_in_gradients_hook.__annotations__.update(
    bucket=dist.GradBucket,  # type: ignore[attr-defined]
    **{"return": torch.futures.Future[torch.Tensor]},
)


def _stronger(a: BaseException | None, b: BaseException | None) -> BaseException | None:
    """Of two agreed outcomes (alike on every rank), the one to raise: an error, else the outer cancel."""
    if a is None or b is None:
        return a if b is None else b
    level = {id(x): (2**10 if not isinstance(x, Cancel) else x.level) for x in (a, b)}
    return a if level[id(a)] >= level[id(b)] else b


def _codes(outcome: BaseException | None) -> torch.Tensor:
    """This rank's outcome code at its own index, zeros elsewhere: summed over ranks, every rank's code."""
    codes = torch.zeros(world_size(), dtype=torch.int64, device=collective_device())
    codes[rank()] = _code(outcome)
    return codes


def _post(outcome: BaseException | None, *, blocking: bool) -> tuple[torch.Tensor, dist.Work | None]:
    codes = _codes(outcome)
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
