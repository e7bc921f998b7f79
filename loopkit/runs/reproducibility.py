"""What reproducing a run needs, recorded when it starts: command line, seed, git commit, versions, host.

:func:`reproducibility` is stored in ``run.json`` (:mod:`loopkit.runs.record`) as ``repro``; git is asked once per
process and directory, with a timeout, and its absence is recorded as None.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def reproducibility(seed: Any = None, source_dir: str | None = None, argv: Sequence[str] | None = None) -> dict:
    """What reproducing a run needs: command line, seed, git commit and dirty flag, Python/torch/loopkit versions."""
    import torch

    try:
        from importlib.metadata import version

        loopkit_version = version("loopkit")
    except Exception:  # not installed (run from a checkout)
        loopkit_version = None
    git_dir = source_dir or os.getcwd()
    commit, dirty = _git(git_dir, "rev-parse", "HEAD"), None
    if commit is not None:
        status = _git(git_dir, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {
        # sys.orig_argv keeps "-m package.module" where sys.argv shows the module's file.
        "command": shlex.join(
            getattr(sys, "orig_argv", [sys.executable, *sys.argv]) if argv is None else [sys.executable, *argv]
        ),
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "seed": seed,
        "git_commit": commit,
        "git_dirty": dirty,
        "git_dir": git_dir if commit is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loopkit": getattr(sys.modules.get("loopkit"), "__version__", None) or loopkit_version,
        "host": platform.node(),
        "pid": os.getpid(),
    }


@functools.lru_cache(maxsize=16)  # once per process and directory: a sweep runs many trials from one tree
def _git(directory: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", directory, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()
