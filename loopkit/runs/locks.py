"""Lock files: one process at a time on a shared file storage or on one run's directory.

A lock is ``fcntl.flock`` on a file that holds nothing. The kernel releases it when its holder dies (a killed worker
never leaves it held), and it is never deleted (deleting a lock file another process holds would let a third take a
second lock on a new file of the same name).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from .paths import PathError


@contextlib.contextmanager
def held(path: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) inside the block.

    Args:
        path: the lock file.
        wait: wait for the holder to let go (True), or give up at once (False).

    Yields:
        True when this process holds the lock; False when ``wait=False`` and another process holds it.

    Raises:
        PathError: ``path`` is a symbolic link (a crafted run directory could point it anywhere; a lock file is a
            plain file that loopkit creates, so it is never followed).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise PathError(
            f"refusing the lock file {path!r}: it is a symbolic link, and loopkit follows none out of a run's "
            "root; remove the link (loopkit makes the lock file itself)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


__all__ = ["held"]
