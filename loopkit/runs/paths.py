"""Names and paths of run records: every name is one checked path component, every path stays inside its root.

A run or experiment name comes from flags, config and sweep files, a sweep's storage, or the ``show``/``resume``
arguments; whichever way it enters, :func:`check_name` checks it before it becomes part of a path. A path is
then built with :func:`inside`, which resolves it (symbolic links included) and refuses it when it leaves the
root: a symlinked experiment or ``checkpoints`` directory that points elsewhere is refused, not followed.

Example:
    >>> check_name("run", "lr-0.01_seed1")
    'lr-0.01_seed1'
    >>> check_name("experiment", "../outside")
    Traceback (most recent call last):
    ...
    loopkit.runs.paths.PathError: experiment name '../outside': use letters, digits, '-', '_' and '.' (not first), at most 128 characters
"""

from __future__ import annotations

import os
import re

MAX_NAME = 128  # characters; well under every file system's 255-byte component limit
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class PathError(ValueError):
    """A name that is not one plain path component, or a path that leaves the run root."""


def check_name(kind: str, name: object) -> str:
    """``name`` if it is one path component: letters, digits, ``-``, ``_`` and ``.`` (not first), 1 to 128 long.

    That excludes the empty name, ``.`` and ``..``, separators (``/``, ``\\``), NUL and every other control
    character, so a name can never step out of its directory.

    Raises:
        PathError: naming ``kind`` (``"run"``, ``"experiment"``) and quoting the name.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:60]) + "..."
        raise PathError(
            f"{kind} name {shown}: use letters, digits, '-', '_' and '.' (not first), at most {MAX_NAME} characters"
        )
    return name


def inside(root: str | os.PathLike, *parts: str) -> str:
    """``os.path.join(root, *parts)``, once its resolved form (symbolic links followed) is inside ``root``'s.

    The path need not exist; the parts that do are resolved. Returns the joined path (not resolved), so that
    what is printed is what the user typed.

    Raises:
        PathError: the path resolves outside ``root`` (naming both).
    """
    root = os.fspath(root)
    path = os.path.join(root, *parts)
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        raise PathError(
            f"{path!r} resolves to {real!r}, outside the run root {real_root!r}; loopkit reads and writes only "
            "inside its root (is a directory there a symbolic link to elsewhere?)"
        )
    return path


__all__ = ["MAX_NAME", "PathError", "check_name", "inside"]
