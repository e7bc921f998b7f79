"""Checks of a sweep's settings and of what a sweep reads back from its storage, and :class:`SweepError`.

Every setting of a :class:`~loopkit.runs.sweep.Sweep` and of a sweep file is checked before any trial runs and
refused with :class:`SweepError` quoting the value (cut short, :func:`short`); run names read back from the
storage are kept only when each is one path component (:func:`run_names`): the storage is data, never a path.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .paths import PathError, check_name


class SweepError(ValueError):
    """A sweep that cannot run as given; raised before any trial runs."""


def short(value: Any) -> str:
    """``repr(value)``, cut short: an error message never formats a huge value whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 60
    r.maxlevel = 3
    return r.repr(value)


def whole(name: str, value: Any, *, low: int, note: str = "") -> int:
    """``value`` if it is a whole number in ``[low, 2**63)`` (not a bool), else :class:`SweepError` naming ``name``
    (after ``note``, when given)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**63:
        raise SweepError(
            (f"{note}: " if note else "")
            + f"{name} must be a whole number in [{low}, 2**63), got {name}={short(value)}"
        )
    return value


def run_names(names: Any) -> list[str]:
    """Run names read back from the storage: kept only if each is one path component (the storage is data)."""
    if not isinstance(names, list):
        return []
    out = []
    for name in names:
        with contextlib.suppress(PathError):
            out.append(check_name("run", name))
    return out
