"""A run's console output, copied into a log file in its run directory (``<run>/output.log``).

Everything the run's process prints through Python's ``sys.stdout`` and ``sys.stderr`` while it trains (the
progress line, warnings, a traceback) still goes to the console and is also appended to the file, so a run
started in a terminal that has since closed can be read back (``python -m loopkit.runs show`` names the
file). A resumed run appends to the same file. Output written by C code straight to the file descriptors
(rare: some CUDA messages) is not copied. Only the main process (rank 0) writes the file.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

from ..distributed import is_main_process

LOG_FILE = "output.log"


class _Copy:
    """A text stream that writes to ``stream`` and to ``log``; everything else is ``stream``'s own."""

    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def console_copied_to(path: str) -> Iterator[None]:
    """Inside the block, copy ``sys.stdout`` and ``sys.stderr`` to ``path`` (appended, line-buffered, UTF-8).

    On ranks other than 0 nothing is copied. The streams are restored when the block ends, however it ends.
    """
    if not is_main_process():
        yield
        return
    out, err = sys.stdout, sys.stderr
    with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        sys.stdout, sys.stderr = _Copy(out, log), _Copy(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
