"""Monitoring a metric: checking at set-up that Metrics produces the key, and reading its latest value from the
learner's declared state (``learner.metrics``, written by :class:`~loopkit.callbacks.metrics.Metrics`)."""

from __future__ import annotations

import difflib
from typing import Any

from ..loop.evaluation import evaluation_sets
from .metrics import Metrics


def monitored_metrics(learner: Any, monitor: str, who: str) -> Metrics:
    """The learner's Metrics callback, once ``monitor`` is known to be a key it produces in this learner.

    Raises:
        ValueError: no Metrics callback; a ``valid_*`` key without ``valid_data``; a key Metrics never produces
            (the message lists the ones it does, closest first).
    """
    try:
        metrics: Metrics = learner.callback(Metrics)
    except KeyError:
        raise ValueError(f"{who}(monitor={monitor!r}) needs a Metrics callback in the Learner") from None
    phases = ["train", *(name for name, _ in evaluation_sets(learner.valid_data))]
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


def latest(learner: Any, key: str) -> float:
    """The latest finished epoch's value of ``key`` from ``learner.metrics``; ``KeyError`` lists the keys."""
    row = learner.metrics
    if key not in row:
        raise KeyError(f"no metric {key!r} after this epoch; known: {sorted(row)}")
    return row[key]
