"""How the handlers of one event run, and what one or more of them raising means.

The rule, for every event: every handler runs, whatever an earlier handler of the same event raised (a
``Cancel*`` or an error such as a full disk in a logger). Once all ran, :func:`resolve` picks what the event
raises: the first error, if any handler raised one (later errors and cancels are attached to it as notes);
otherwise the outermost cancel (``CancelFit`` over ``CancelEpoch`` over ``CancelPhase`` over ``CancelBatch``
over ``CancelStep``). So a callback that stops the fit in ``after_epoch`` never keeps a ``Checkpoint`` or a
logger from seeing that epoch.

:func:`resolve` is the one place where an event's outcome is decided; at the phase-level events of a distributed
run :func:`fire` then makes every rank take the same outcome (:mod:`loopkit.loop.agreement`).

Attached errors: ``error.add_note(...)`` (Python 3.11+), or the same strings appended to ``error.__notes__``
on Python 3.10, one note per further exception naming the event and the callback that raised it.

Example:
    >>> from loopkit.loop.events import CancelEpoch, CancelFit
    >>> seen = []
    >>> def stop(): seen.append("stop"); raise CancelEpoch
    >>> def stop_all(): seen.append("stop_all"); raise CancelFit
    >>> def save(): seen.append("save")
    >>> try:
    ...     fire(Handlers("after_batch", (stop, stop_all, save)))
    ... except CancelFit:
    ...     seen.append("fit cancelled")
    >>> seen
    ['stop', 'stop_all', 'save', 'fit cancelled']
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Iterable

from ..distributed.ranks import is_distributed
from .agreement import AGREED_EVENTS, LATE_EVENTS, agree, agree_late
from .callback import callback_name, handled_events
from .events import BATCH_EVENTS, EVENTS, Cancel
from .guard import guarded_view


class Handlers(tuple):
    """The handlers of one event, in run order, with the event's name for error messages.

    ``agreed``: the event's outcome is agreed across ranks in a distributed run: the phase-level events
    (:data:`loopkit.loop.agreement.AGREED_EVENTS`) always, a train batch-level event when one of its
    callbacks does not declare ``agrees_across_ranks`` (the Learner passes ``agreed=True``).
    """

    event: str
    agreed: bool

    def __new__(cls, event: str, handlers: Iterable = (), *, agreed: bool = False) -> Handlers:
        self = super().__new__(cls, handlers)
        self.event = event
        self.agreed = agreed or event in AGREED_EVENTS
        return self

    def __add__(self, other: tuple) -> Handlers:
        return Handlers(self.event, tuple(self) + tuple(other), agreed=self.agreed)


def fire(handlers: Handlers, carried: BaseException | None = None) -> None:
    """Run every handler of one event; then raise what :func:`resolve` decides, if any handler raised.

    At an agreed event of a distributed run, what is raised is the outcome every rank agreed on
    (:func:`loopkit.loop.agreement.agree`): it runs even when no handler raised, so every rank joins.
    ``carried``: a cancel this rank raised earlier in the level, which it brings to the agreement as if a
    handler of this event had raised it (only at an agreed event of a distributed run).
    """
    if handlers.agreed and is_distributed():
        raised = run_all(handlers)
        if carried is not None:
            raised.append(("an earlier event of this level on this rank", carried))
        decide = agree_late if handlers.event in LATE_EVENTS else agree
        outcome = decide(handlers.event, resolve(handlers.event, raised) if raised else None)
        if outcome is not None:
            outcome.agreed = True  # type: ignore[attr-defined]  # every rank raises it: none carries it further
            raise outcome
        return
    it = iter(handlers)
    try:
        for handler in it:
            handler()
        return
    except BaseException as first:  # every exception is resolved below, none is dropped
        raised = [(handler, first), *run_all(it)]
    raise resolve(handlers.event, raised)


def run_level(
    before: Handlers,
    body: Callable[[], None],
    after: Handlers,
    cancel: type[Exception],
    *,
    carry: bool = False,
    abandon: Callable[[BaseException], None] | None = None,
) -> None:
    """The one loop primitive, every level of the loop (epoch, phase, batch) runs through: before handlers, body, after handlers (also after a ``cancel``).

    ``abandon`` (the train batch): called with the exception that leaves the level before it completes (a
    cancel or an error), to drop what the level held. ``carry`` (the valid phase): in a distributed run, an
    outer cancel that this rank alone raised in the body (its batch events are not agreed) is carried to the
    agreed ``after`` event, so every rank reaches that event and takes the cancel there together.
    """
    carried = None
    try:
        if before or before.agreed:  # no call at all for an event without handlers
            fire(before)
        body()
    except cancel as exc:
        if abandon is not None:
            abandon(exc)
    except BaseException as exc:
        if abandon is not None:
            abandon(exc)
        if (
            not isinstance(exc, Cancel)
            or not (carry and after.agreed and is_distributed())
            or getattr(exc, "agreed", False)
        ):
            raise
        carried = exc
    try:  # noqa: SIM105 - a try costs nothing here, contextlib.suppress a context manager per level
        fire(after, carried)
    except cancel:
        pass  # raised in the level's own after_ handlers: the level is over, there is nothing to cancel


def run_all(handlers: Iterable) -> list[tuple[object, BaseException]]:
    """Run every handler, whatever the others raise; return each ``(handler, exception)`` raised, in order."""
    raised = []
    for handler in handlers:
        try:
            handler()
        except BaseException as exc:
            raised.append((handler, exc))
    return raised


def resolve(event: str, raised: list[tuple[object, BaseException]]) -> BaseException:
    """What an event raises, given each ``(handler, exception)`` its handlers raised, in run order.

    The first error (an exception that is not a ``Cancel``) wins, with every other exception attached to it as
    a note; without errors, the outermost cancel (highest ``level``; the first of equals).
    """
    errors = [exc for _, exc in raised if not isinstance(exc, Cancel)]
    if errors:
        winner = errors[0]
        for handler, exc in raised:
            if exc is not winner:
                add_note(winner, f"also raised in {event} by {handler_name(handler)}: {describe(exc)}")
        return winner
    cancels = [exc for _, exc in raised if isinstance(exc, Cancel)]
    cancel = max(cancels, key=lambda exc: exc.level)  # max keeps the first of equals
    cancel.event = event  # type: ignore[attr-defined]  # where it was raised, for messages
    return cancel


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, or its Python 3.10 equivalent (a ``__notes__`` list of strings)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
        return
    notes = getattr(error, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        try:
            error.__notes__ = notes  # type: ignore[attr-defined]
        except AttributeError:  # an exception type without a __dict__: nowhere to attach
            return
    notes.append(note)


def handler_name(handler: object) -> str:
    """The callback a handler belongs to, for messages (``functools.partial`` of a bound method)."""
    if isinstance(handler, str):  # a description, for a carried cancel
        return handler
    func = getattr(handler, "func", handler)
    owner = getattr(func, "__self__", None)
    if owner is None:
        return getattr(func, "__qualname__", repr(func))
    return callback_name(owner)


def describe(exc: BaseException) -> str:
    """``"Type: message (at file:line in function)"`` for a note about an exception raised elsewhere."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def build_handlers(learner: object, callbacks: list[object]) -> tuple[dict[str, Handlers], dict[str, Handlers]]:
    """The handlers of every event for training and for validation, each bound to its callback's guarded view.

    Validation runs the batch events unagreed: ranks may hold different numbers of valid batches, so a rank's
    cancel there is carried to the agreed ``after_valid`` (see :func:`loopkit.loop.dispatch.run_level`). In training, a batch event
    is agreed across ranks when one of its callbacks does not declare ``agrees_across_ranks``.
    """
    handlers: dict[str, Handlers] = {event: Handlers(event) for event in EVENTS}
    for cb in callbacks:
        view = guarded_view(learner, cb)
        for event in handled_events(cb):
            handlers[event] += (functools.partial(getattr(cb, event), view),)
    valid = dict(handlers)
    for event in BATCH_EVENTS:
        if any(not getattr(cb, "agrees_across_ranks", False) for cb in callbacks if event in handled_events(cb)):
            handlers[event] = Handlers(event, handlers[event], agreed=True)
    return handlers, valid


def describe_handlers(handlers: dict[str, Handlers]) -> str:
    """For each event that has handlers, the callbacks that run there, in order (``Learner.describe``).

    Example:
        >>> import torch
        >>> from loopkit import Learner
        >>> class Log:
        ...     reads = ("loss",)
        ...     def after_loss(self, learner): ...
        ...     def after_fit(self, learner): ...
        >>> model = torch.nn.Linear(1, 1)
        >>> learner = Learner(model, [(torch.ones(1, 1), torch.ones(1, 1))],
        ...                   torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
        ...                   callbacks=[Log()])
        >>> print(learner.describe())
        after_loss: Log
        after_fit: Log
    """
    lines = []
    for event in EVENTS:
        names = [callback_name(h.func.__self__) for h in handlers[event]]
        if names:
            lines.append(f"{event}: {' -> '.join(names)}")
    return "\n".join(lines) if lines else "(no callbacks)"
