"""Reading a checkpoint back, whichever form it was written in: one file (:mod:`loopkit.resume.file`) or a
sharded checkpoint's directory (:mod:`loopkit.resume.sharded`)."""

from __future__ import annotations

import os
from typing import Any

from .file import load_file
from .sharded import is_sharded_checkpoint, load_sharded


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and verify a checkpoint, on the CPU: a file written by :func:`~loopkit.resume.file.save_atomic`, or
    a sharded checkpoint's directory (every shard's checksum verified, read whole by
    :func:`~loopkit.resume.sharded.load_sharded`).

    Args:
        path: the checkpoint file, or the ``*.dcp`` directory of a sharded checkpoint.

    Returns:
        the checkpoint's state, a dict of plain data and CPU tensors.

    Raises:
        FileNotFoundError: there is no checkpoint at ``path``.
        CheckpointError: it is not a loopkit checkpoint (empty, text, another program's file, a bare
            ``torch.save`` file, a ``loopkit-checkpoint-1`` file), is truncated or corrupted (a checksum does not
            match), or holds something other than data. The message names the file.
    """
    if is_sharded_checkpoint(path):
        return load_sharded(path)
    return load_file(path)
