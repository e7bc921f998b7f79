"""Finding a monitored metric at set-up: shared by the callbacks that act on a Metrics key."""

from __future__ import annotations

import difflib
from typing import Any

from .metrics import Metrics


def monitored_metrics(learner: Any, monitor: str, who: str) -> Metrics:
    """The learner's Metrics callback, once ``monitor`` is known to be a key it produces in this learner.

    Raises:
        ValueError: no Metrics callback; a ``valid_*`` key without ``valid_data``; a key Metrics never produces
            (the message lists the ones it does, closest first).
    """
    metrics = next((cb for cb in learner.callbacks if isinstance(cb, Metrics)), None)
    if metrics is None:
        raise ValueError(f"{who}(monitor={monitor!r}) needs a Metrics callback in the Learner")
    phases = ("train", "valid") if learner.valid_data is not None else ("train",)
    names = [*metrics.names, *getattr(metrics, "stateful", {})]  # averaged functions, then metric objects
    known = [f"{phase}_{name}" for phase in phases for name in names]
    if monitor in known:
        return metrics
    if monitor.startswith("valid_") and learner.valid_data is None:
        raise ValueError(
            f"{who}(monitor={monitor!r}) needs validation, but the Learner has no valid_data; "
            f"pass valid_data=... to the Learner, or monitor one of {known}"
        )
    close = difflib.get_close_matches(monitor, known, n=len(known), cutoff=0.0)
    raise ValueError(
        f"{who}(monitor={monitor!r}): Metrics never produces that name; it produces {close} "
        "(closest first); monitor one of those, or add the metric function to Metrics"
    )
