"""Checkpoint files: written atomically, read back whole.

A checkpoint is ``Learner.state_dict()`` saved with ``torch.save``. Writing goes to a temporary file in the
same directory, which is flushed and fsynced, then renamed over the target with ``os.replace`` (atomic on
POSIX and Windows), and the directory is fsynced so the rename itself survives a power cut. A crash at any
moment therefore leaves either the old checkpoint or the new one, never a torn file.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> save_atomic({"answer": 42}, path)
    >>> load_checkpoint(path)["answer"]
    42
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with ``torch.save`` to ``path`` so that ``path`` is never left half-written."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Windows cannot open a directory; there the rename is durable once os.replace returns.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`, on the CPU."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}; pass the path of a file written by Checkpoint")
    # weights_only=False: checkpoints hold RNG states and callback states (numpy arrays, tuples).
    # Only load checkpoints you wrote yourself.
    return torch.load(path, map_location="cpu", weights_only=False)
