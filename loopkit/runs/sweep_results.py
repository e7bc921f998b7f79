"""A sweep's results: one row per configuration with the mean and spread over seeds, the best parameters, and
the results as a text table and a plot.

:class:`SweepResults` is the part of :class:`~loopkit.runs.sweep.Sweep` that reads the study back; ``matplotlib``
is imported only by :meth:`SweepResults.plot`.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

import numpy as np

from .paths import inside
from .space import Dimension, apply
from .sweep_checks import SweepError
from .table import table

PARAMS_ATTR = "loopkit_params"


class SweepResults:
    """Read a sweep's outcome; mixed into :class:`~loopkit.runs.sweep.Sweep`, which sets these attributes."""

    storage: Any
    study_name: str
    root: str
    experiment: str
    seed: int
    base: dict[str, Any]
    dimensions: dict[str, Dimension]
    monitor: str
    mode: str

    def results(self) -> list[dict[str, Any]]:
        """One row per configuration (seeds pooled): parameters, mean and standard deviation of the metric over
        its finished runs, how many runs finished/pruned/failed, and the trial numbers; best first."""
        import optuna

        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        groups: dict[str, dict[str, Any]] = {}
        for t in study.get_trials(deepcopy=False):
            if t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING):
                continue
            if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("loopkit_reason") == "interrupted":
                continue  # retried under a new trial
            point = self.trial_params(t)
            point.pop("seed", None)
            key = json.dumps(point, sort_keys=True, default=repr)
            row = groups.setdefault(
                key, {"params": point, "values": [], "finished": 0, "pruned": 0, "failed": 0, "trials": []}
            )
            row["trials"].append(t.number)
            if t.state == optuna.trial.TrialState.COMPLETE:
                row["finished"] += 1
                row["values"].append(t.value)
            elif t.state == optuna.trial.TrialState.PRUNED:
                row["pruned"] += 1
            else:
                row["failed"] += 1
        rows = []
        for row in groups.values():
            values = row.pop("values")
            row["mean"] = statistics.fmean(values) if values else None
            row["std"] = statistics.stdev(values) if len(values) > 1 else None  # no spread from one value
            row["n"] = len(values)
            rows.append(row)
        sign = -1 if self.mode == "max" else 1
        rows.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] if r["mean"] is not None else 0.0)))
        return rows

    def trial_params(self, trial: Any) -> dict[str, Any]:
        """The searched parameters ``trial`` (an Optuna ``FrozenTrial``) ran with, every dimension included.

        Read from what the trial recorded when it started; a trial that never started (or was recorded by an
        older loopkit) falls back on its enqueued values, then on its sampler's parameters, and a
        single-valued dimension is filled in from its one value.
        """
        point = dict(trial.user_attrs.get(PARAMS_ATTR) or trial.system_attrs.get("fixed_params") or trial.params)
        for name, dim in self.dimensions.items():
            if name not in point:
                only = dim.values(np.random.default_rng(self.seed))
                if len(only) == 1:
                    point[name] = only[0]
        return point

    def best_params(self) -> dict[str, Any]:
        """The best configuration's parameters (all of them: the searched ones over ``base``)."""
        rows = [r for r in self.results() if r["mean"] is not None]
        if not rows:
            raise SweepError("no trial of this sweep has finished yet")
        return apply(self.base, rows[0]["params"])

    def table(self) -> str:
        """The results as a text table, best first."""
        names = list(self.dimensions)
        rows = [
            [
                *(r["params"].get(n) for n in names),
                r["mean"],
                r["std"],
                r["n"],
                r["pruned"],
                r["failed"],
                ",".join(map(str, r["trials"])),
            ]
            for r in self.results()
        ]
        return table(rows, [*names, f"{self.monitor} mean", "std", "n", "pruned", "failed", "trials"])

    def plot(self, path: str | os.PathLike | None = None) -> str:
        """A PNG of the metric against each searched parameter (one panel each; every finished run a dot,
        each configuration's mean a cross); returns its path (default ``<root>/<experiment>/sweep.png``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna

        path = os.fspath(path or inside(self.root, self.experiment, "sweep.png"))
        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        names = [n for n, d in self.dimensions.items() if len(d.values(np.random.default_rng(self.seed))) > 1] or list(
            self.dimensions
        )
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
        means = self.results()
        for ax, name in zip(axes[0], names):
            xs = [self._value_of(t, name) for t in done]
            ax.scatter(xs, [t.value for t in done], s=14, alpha=0.6, label="runs")
            mx = [r["params"].get(name) for r in means if r["mean"] is not None]
            my = [r["mean"] for r in means if r["mean"] is not None]
            ax.scatter(mx, my, marker="x", color="k", label="mean over seeds")
            if self.dimensions[name].is_log() and all(isinstance(x, (int, float)) and x > 0 for x in xs + mx):
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(self.monitor)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{self.experiment}: {self.monitor} ({self.mode}) over {len(done)} finished trials")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def _value_of(self, trial: Any, name: str) -> Any:
        return self.trial_params(trial).get(name)
