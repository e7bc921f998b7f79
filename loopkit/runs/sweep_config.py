"""A sweep from a sweep file: :func:`from_config` checks a YAML/TOML mapping's keys and makes the
:class:`~loopkit.runs.sweep.Sweep` it describes (``python -m loopkit.runs sweep sweep.yaml``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from .paths import PathError, inside
from .storage import storage_file
from .sweep import Sweep
from .sweep_checks import SweepError, short


def from_config(config: Mapping[str, Any], **overrides: Any) -> Sweep:
    """A Sweep from a YAML/TOML mapping: ``task``, ``parameters`` (the dimensions), and any of Sweep's keyword
    arguments (``experiment``, ``sampler``, ``n_trials``, ``seed``, ``seeds``, ``base``, ``monitor``, ``mode``,
    ``storage``, ``study_name``, ``pruner``, ``root``, ``heartbeat``, ``stale_after``).

    A ``storage`` file named in the file (not in ``overrides``, the command line) must lie inside the root.

    Raises:
        SweepError: an unknown key (listing the known ones), a missing or non-string ``task``, a bad value.
    """
    if not isinstance(config, Mapping):
        raise SweepError(f"the sweep file must hold a mapping of settings, got {short(config)}")
    known = {
        name
        for name, p in inspect.signature(Sweep.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(map(str, config)) - known - {"task", "parameters"})
    if unknown:
        raise SweepError(
            f"unknown sweep setting(s) {', '.join(map(repr, unknown))}; known: task, parameters, {', '.join(sorted(known))}"
        )
    if "task" not in config or not isinstance(config["task"], str):
        raise SweepError(
            "the sweep file needs a 'task': a module name such as loopkit.demo, or a .py file"
            + (f"; got task={short(config['task'])}" if "task" in config else "")
        )
    root = overrides.get("root") or config.get("root") or "runs"
    if not isinstance(root, str) or not root:
        raise SweepError(f"root must be a directory name, got root={short(root)}")
    storage = config.get("storage")
    if overrides.get("storage") is None and isinstance(storage, str) and storage_file(storage) is not None:
        try:
            inside(root, os.path.relpath(storage_file(storage) or "", os.path.abspath(root)))
        except PathError as error:
            raise SweepError(
                f"storage {storage!r} in the sweep file: {error}; pass it as --storage if you mean it"
            ) from None
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    kwargs = {k: v for k, v in config.items() if k not in ("task", "parameters")}
    kwargs.setdefault("experiment", "sweep")
    return Sweep(config["task"], config.get("parameters") or {}, **kwargs)
