"""Runs, parameters and sweeps: the run around the loop.

- :mod:`~loopkit.runs.parameters`: typed parameters as a dataclass, checked (:func:`make_params`);
- :mod:`~loopkit.runs.flags` and :mod:`~loopkit.runs.config_files`: parameters from command-line flags and config
  files;
- :mod:`~loopkit.runs.registry`: schedules and torch losses by name, so a whole job is a parameter set;
- :mod:`~loopkit.runs.open`: a run's parameters, status, metrics and its best or last model (:func:`open_run`);
- :mod:`~loopkit.runs.record`: run records under ``runs/<experiment>/<run>`` (status, metrics), checked when read
  (:mod:`~loopkit.runs.record_check`), with what reproducing a run needs (:mod:`~loopkit.runs.reproducibility`);
- :mod:`~loopkit.runs.recorder`: the callback that writes a run's record while it trains;
- :mod:`~loopkit.runs.task`: load a task (a module with ``Params`` and ``build``), name it in a record, trust it;
- :mod:`~loopkit.runs.runner`: run a task as a recorded run, resume one;
- :mod:`~loopkit.runs.space`: search dimensions (Valohai's Single, Multiple, Linear, Logspace, Random) and grids;
- :mod:`~loopkit.runs.sweep`: sweeps on Optuna (grid, random, TPE), shared storage, several workers;
  its storage (:mod:`~loopkit.runs.storage`), trials (:mod:`~loopkit.runs.trials`), results
  (:mod:`~loopkit.runs.sweep_results`), settings checks (:mod:`~loopkit.runs.sweep_checks`) and sweep files
  (:mod:`~loopkit.runs.sweep_config`);
- :mod:`~loopkit.runs.pruning`: the callback that reports a metric to an Optuna trial each epoch;
- :mod:`~loopkit.runs.cli` and :mod:`~loopkit.runs.sweep_cli`: ``python -m loopkit.runs`` (and the ``loopkit``
  console script); the sweep's results table and plot are methods of :class:`~loopkit.runs.sweep.Sweep`.

Nothing here imports optuna, yaml or matplotlib until a sweep, a YAML file or a plot needs it.
"""

from .flags import parse_params
from .open import OpenedRun, load_model, open_run
from .parameters import ParameterError, make_params, param, to_dict

__all__ = ["OpenedRun", "ParameterError", "load_model", "make_params", "open_run", "param", "parse_params", "to_dict"]
