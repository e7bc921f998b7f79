"""Guarded views: how a callback sees the learner, and how undeclared writes are caught for free.

Each callback receives its own view of the learner: an instance of a subclass of the learner's class that
*shares the learner's ``__dict__``*. Reading an attribute through the view is an ordinary instance-dict
lookup, as fast as on the learner itself; only ``__setattr__``/``__delattr__`` are overridden, to check the
name against the callback's declared ``writes``. Nothing is checked on reads and nothing is copied, so a
run that violates nothing pays nothing per step (``benchmarks/bench_overhead.py`` measures it).

Example:
    >>> class Learnerish:
    ...     pass
    >>> class Sneaky:
    ...     writes = ("loss",)
    >>> learner = Learnerish(); learner.loss = 1.0
    >>> view = guarded_view(learner, Sneaky())
    >>> view.loss = 2.0; learner.loss
    2.0
    >>> view.model = None
    Traceback (most recent call last):
    ...
    loopkit.loop.callback.UndeclaredWriteError: callback Sneaky set learner.model without declaring it; add 'model' to Sneaky.writes
"""

from __future__ import annotations

from .callback import UndeclaredWriteError, callback_name


def guarded_view(learner: object, callback: object) -> object:
    """Return a view of ``learner`` whose attribute writes are limited to ``callback``'s declared ``writes``."""
    # Dotted declarations ("optimizer.lr") mutate an object in place; only bare names may be rebound.
    allowed = frozenset(w for w in getattr(callback, "writes", ()) if "." not in w)
    owner = callback_name(callback)

    def __setattr__(self: object, name: str, value: object) -> None:
        if name not in allowed:
            raise UndeclaredWriteError(
                f"callback {owner} set learner.{name} without declaring it; add {name!r} to {owner}.writes",
                name=name,
            )
        object.__setattr__(self, name, value)

    def __delattr__(self: object, name: str) -> None:
        if name not in allowed:
            raise UndeclaredWriteError(
                f"callback {owner} deleted learner.{name} without declaring it; add {name!r} to {owner}.writes",
                name=name,
            )
        object.__delattr__(self, name)

    base = type(learner)
    view_type = type(
        base.__name__,
        (base,),
        {
            "__setattr__": __setattr__,
            "__delattr__": __delattr__,
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
        },
    )
    view: object = object.__new__(view_type)
    object.__setattr__(view, "__dict__", learner.__dict__)
    return view
