"""Argument checks shared across loopkit: fail at construction, quoting the value and the fix."""

from __future__ import annotations

from typing import Any


def whole_number(owner: str, name: str, value: Any, minimum: int = 1, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum`` (or None when ``optional``).

    Example:
        >>> whole_number("Checkpoint", "keep_last", 0)
        Traceback (most recent call last):
        ...
        ValueError: Checkpoint(keep_last=0) needs a whole number >= 1
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        tail = ", or None" if optional else ""
        raise ValueError(f"{owner}({name}={value!r}) needs a whole number >= {minimum}{tail}")
