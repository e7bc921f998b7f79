"""The Callback base class: what a callback may declare, and the checks made when a Learner is built.

A callback is any object whose methods are named after events (``loopkit.loop.events.EVENTS``); each such method
takes the learner as its one argument. Subclassing :class:`Callback` is optional but gives the declarations
their defaults and a ``state_dict`` pair.

Declarations (class attributes or instance attributes):

- ``reads`` / ``writes``: learner state the callback reads or writes, as attribute names or dotted paths into
  them (``"loss"``, ``"optimizer.lr"``). The run order is derived from them: a writer of X runs before a
  reader of X. Rebinding a learner attribute that is not declared in ``writes`` raises
  :class:`UndeclaredWriteError`. Mutating an object in place (``learner.optimizer.param_groups[0]["lr"] = x``)
  is not intercepted; declare it anyway (``"optimizer.lr"``) so that ordering and clash detection see it.
- ``run_after`` / ``run_before``: callback classes or names this callback must follow or precede, to order
  callbacks the declarations leave unordered and to resolve write/write clashes.

Example:
    >>> class CountBatches(Callback):
    ...     reads = ("phase",)
    ...     def __init__(self):
    ...         self.n = 0
    ...     def after_batch(self, learner):
    ...         self.n += learner.phase == "train"
    >>> sorted(handled_events(CountBatches()))
    ['after_batch']
"""

from __future__ import annotations

import difflib
import functools
import types
from collections.abc import Sequence
from typing import Any

from .events import EVENTS

_EVENT_SET = frozenset(EVENTS)
_EVENT_PREFIXES = ("before_", "after_", "on_")
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)


class Callback:
    """Base class for callbacks: no-op declarations and an empty, round-tripping state.

    A callback handles an event by defining a method of that name (``def after_epoch(self, learner)``); a
    method that looks like an event but names none is a :class:`CallbackError` when the Learner is built.

    Attributes:
        reads: learner state the callback reads: attribute names or dotted paths (``"optimizer.lr"``).
        writes: learner state the callback writes; rebinding an undeclared attribute raises
            :class:`UndeclaredWriteError`. Writers of X run before readers of X.
        run_after: callback classes or names (``"*"`` for all) this one must run after.
        run_before: callback classes or names this one must run before.
        agrees_across_ranks: in a distributed run, whether this callback's batch-level handlers decide
            alike on every rank by construction (from values every rank shares, such as ``global_step``, or
            by agreeing themselves with :func:`loopkit.distributed.any_rank`). If not (the default), the
            ranks agree on the outcome of each train batch-level event it handles, one small all-reduce per
            event and step, so a cancel or an error on one rank is taken by all (see ``docs/distributed.md``).
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    run_after: tuple[type | str, ...] = ()
    run_before: tuple[type | str, ...] = ()
    agrees_across_ranks: bool = False

    def state_dict(self) -> dict[str, Any]:
        """Return what this callback needs to continue exactly after a restart (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(
                f"{callback_name(self)} got state {sorted(state)} but defines no load_state_dict; "
                "override load_state_dict to restore it"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CallbackError(TypeError):
    """A callback is malformed: not a callback, a misnamed event method, or a bad declaration."""


class UndeclaredWriteError(AttributeError):
    """A callback rebound a learner attribute it did not declare in ``writes``."""


def callback_name(callback: object) -> str:
    """The name a callback is known by in errors, ``describe()`` and checkpoints.

    Its ``name`` attribute if that is a non-empty string (so two instances of one class, such as a per-epoch
    and a per-step Scheduler, can live in one Learner), else its class name.
    """
    name = getattr(callback, "name", None)
    return name if isinstance(name, str) and name else type(callback).__name__


def handled_events(callback: object) -> list[str]:
    """The events ``callback`` handles, in loop order: the event names it has a method for."""
    return [event for event in EVENTS if callable(getattr(callback, event, None))]


def validate_callback(callback: object) -> None:
    """Raise :class:`CallbackError` unless ``callback`` is a usable callback instance.

    Checks that it is an instance (not a class or function), that every method that looks like an event
    handler names a real event, that it handles at least one event, and that its declarations are sequences
    of strings.
    """
    if isinstance(callback, type):
        raise CallbackError(
            f"callbacks must be instances, got the class {callback.__name__}; pass {callback.__name__}()"
        )
    name = callback_name(callback)
    if isinstance(callback, _FUNCTION_TYPES):
        raise CallbackError(
            f"got {callback!r}, which is a function, not a callback; wrap it in a class with a method named "
            f"after an event, one of {', '.join(EVENTS)}"
        )
    for attr in dir(type(callback)):
        if attr.startswith(_EVENT_PREFIXES) and attr not in _EVENT_SET and callable(getattr(callback, attr)):
            close = difflib.get_close_matches(attr, EVENTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; events are {', '.join(EVENTS)}"
            raise CallbackError(f"callback {name} has method {attr!r}, which is not an event{hint}")
    if not handled_events(callback) and not isinstance(callback, Callback):
        raise CallbackError(
            f"{callback!r} ({name}) is not a callback: it has no method named after an event ({', '.join(EVENTS)})"
        )
    for decl in ("reads", "writes"):
        value = getattr(callback, decl, ())
        if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
            raise CallbackError(
                f"callback {name} declares {decl}={value!r}; it must be a tuple of attribute names such as "
                f"('loss', 'optimizer.lr')"
            )
    for decl in ("run_after", "run_before"):
        value = getattr(callback, decl, ())
        if isinstance(value, (str, type)) or not all(isinstance(v, (str, type)) for v in value):
            raise CallbackError(
                f"callback {name} declares {decl}={value!r}; it must be a tuple of callback classes or names"
            )
    agrees = getattr(callback, "agrees_across_ranks", False)
    if not isinstance(agrees, bool):
        raise CallbackError(f"callback {name} declares agrees_across_ranks={agrees!r}; it must be True or False")


def learner_state_names(learner: object) -> set[str]:
    """The state a learner holds for callbacks to read and write: its public attributes and properties."""
    names = {name for name in vars(learner) if not name.startswith("_")}
    for klass in type(learner).__mro__:
        names |= {name for name, value in vars(klass).items() if isinstance(value, property) and name[0] != "_"}
    return names


def check_declared_state(callbacks: Sequence[object], state: set[str]) -> None:
    """Raise :class:`CallbackError` for a declared read or write that names no learner state.

    Known state is ``state`` (:func:`learner_state_names`: what the Learner holds) and every bare name a callback declares
    it writes (state a callback adds for others to read, as ``Metrics`` fills ``metrics``; FluxTraining's
    ``cbstate``). A dotted name (``"optimizer.lr"``) is checked by its first part, which must already exist: an
    object is mutated in place. So a typo (``"optimzer.lr"``, ``"los"``) fails when the Learner is built, with the
    closest known names, instead of silently ordering nothing.
    """
    known = set(state) | {w for cb in callbacks for w in getattr(cb, "writes", ()) if "." not in w}
    for cb in callbacks:
        for decl in ("reads", "writes"):
            for path in getattr(cb, decl, ()):
                head = path.split(".")[0]
                if head in known or (decl == "writes" and head == path):
                    continue
                close = difflib.get_close_matches(head, sorted(known), n=3)
                hint = (
                    f"did you mean {' or '.join(map(repr, close))}?" if close else f"known: {', '.join(sorted(known))}"
                )
                raise CallbackError(
                    f"callback {callback_name(cb)} declares {decl} {path!r}, but the learner holds no {head!r} and no "
                    f"callback writes it; {hint} Fix the name in {callback_name(cb)}.{decl}"
                )
