"""Sweeps on Optuna: every trial is a recorded run; any number of workers share one storage.

How the parts map onto Optuna (``optuna`` is imported when a sweep is made, not with loopkit):

- **The study** lives in a storage: a journal file (``<root>/<experiment>/sweep.journal``, the default), an
  SQLite file (``sweep.db``) or any database URL Optuna accepts (``postgresql://...``, for workers on several
  machines). It survives a crash: running the same sweep again joins the study and continues.
- **The queue.** The first worker creates the study and enqueues the whole budget at once
  (``study.enqueue_trial``): every grid point (times every seed), or, for ``sampler="random"``, ``n_trials``
  configurations drawn up front from the seeded generator, or, for ``"tpe"``, ``n_trials`` empty trials whose
  parameters TPE suggests when they start. A worker claims a waiting trial the way Optuna's own ``ask`` does
  (``storage.set_trial_state_values(..., RUNNING)`` succeeds for exactly one caller; SQLite ignores the row
  lock that ensures this on a server, so on a file storage every change of a trial's state is made under the
  storage's lock file, :func:`~loopkit.runs.storage.storage_lock`), and never creates a
  trial otherwise. So each grid point runs once and the budget is honoured exactly, however many workers
  start at once (Optuna's ``GridSampler`` alone picks points per worker and can repeat them).
- **Liveness.** A worker's heartbeat thread stamps its trial every ``heartbeat`` seconds. A RUNNING trial whose
  stamp is older than ``stale_after`` (its worker was killed) is failed by any other worker with reason
  ``interrupted`` (its run record too), and a new trial with the same parameters is queued: it resumes the
  same run from its last checkpoint and reports to the new trial. A worker leaves when nothing waits and
  nothing runs, so no trial is left RUNNING while one worker remains.
- **Outcomes.** A run that finishes is COMPLETE with its best ``monitor`` value; one the pruner stops is
  PRUNED; one that raises is FAIL (its error in the trial's user attributes and run record) and the sweep goes on.

Example (a 2-point grid of a tiny task, see ``docs/runs.md`` for the command line):

    >>> # sweep = Sweep("loopkit.demo", {"learning_rate": Multiple([1e-3, 3e-3])}, experiment="lr", base={"epochs": 2})
    >>> # sweep.run(); print(sweep.table())
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .parameters import ParameterError, make_params, to_dict
from .paths import PathError, check_name, inside
from .record import HEARTBEAT_S, STALE_AFTER_S
from .runner import fit_budget
from .space import Dimension, SpaceError, apply, grid, space
from .storage import open_storage, storage_file, storage_lock
from .sweep_checks import SweepError, short, whole
from .sweep_results import SweepResults
from .task import RunError, load_task, task_id
from .trials import TrialWorker

SAMPLERS = ("grid", "random", "tpe")


class Sweep(TrialWorker, SweepResults):
    """Search ``task``'s parameters over ``dimensions``.

    Args:
        task: a task (module, module name or ``.py`` path; see :mod:`loopkit.runs.runner`).
        dimensions: parameter name (or ``"dict_param.key"``) -> :class:`~loopkit.runs.space.Dimension` or its
            config form (``{"logspace": {"start": -4, "end": -2, "count": 3}}``).
        experiment: run records go to ``<root>/<experiment>/trial-NNNN[-seedS]``.
        sampler: ``"grid"`` (every combination), ``"random"`` (``n_trials`` draws from the dimensions'
            distributions) or ``"tpe"`` (Optuna's TPE suggests ``n_trials`` configurations).
        n_trials: the budget for ``random`` and ``tpe`` (a grid's budget is its size).
        seed: seeds Random dimensions' draws, the random sampler and TPE, so a sweep is reproducible.
        seeds: run every configuration once per seed (sets the task's ``seed`` parameter); results report the
            mean and standard deviation over seeds. With ``tpe`` a trial runs every seed and its value is the mean.
        base: parameters shared by every trial (``{"epochs": 5}``), over the task's defaults.
        monitor: the metric to optimise (default: the task's ``MONITOR``).
        mode: ``"min"`` or ``"max"`` (default: the task's ``MODE``).
        storage: a file path or database URL (default ``<root>/<experiment>/sweep.journal``).
        pruner: ``"median"`` (Optuna's MedianPruner, 1 startup trial), ``"none"``, or an Optuna pruner.
        heartbeat: seconds between a running trial's heartbeats.
        stale_after: seconds without a heartbeat before another worker fails the trial as interrupted.

    Raises:
        SweepError: anything wrong with the sweep, before any trial runs: an empty search space, a bad
            dimension (count 0, low > high, an unknown distribution or mode), a configuration the task's
            ``Params`` refuse, a ``monitor`` the task does not produce, a storage that cannot be opened, or a
            study of that name holding a different sweep.
    """

    def __init__(
        self,
        task: Any,
        dimensions: Mapping[str, Any],
        *,
        experiment: str,
        root: str | os.PathLike = "runs",
        sampler: str = "grid",
        n_trials: int | None = None,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        base: Mapping[str, Any] | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        pruner: Any = "median",
        heartbeat: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
    ) -> None:
        try:
            check_name("experiment", experiment)
            self.dimensions: dict[str, Dimension] = space(dimensions)
        except (PathError, SpaceError) as error:
            raise SweepError(str(error)) from None
        if sampler not in SAMPLERS:
            raise SweepError(f"unknown sampler {short(sampler)}; use one of {', '.join(SAMPLERS)}")
        if n_trials is not None or sampler != "grid":
            whole("n_trials", n_trials, low=1, note=f"sampler={sampler!r} needs a budget" if sampler != "grid" else "")
        if sampler == "grid" and n_trials is not None:
            raise SweepError(
                f"n_trials={n_trials!r} with sampler='grid': a grid runs every combination of its dimensions; "
                "leave n_trials out, or use sampler='random' or 'tpe' for a budget of n_trials"
            )
        whole("seed", seed, low=0)
        if seeds is not None:
            if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
                raise SweepError(f"seeds must be a non-empty list of whole numbers, got seeds={short(seeds)}")
            for s in seeds:
                whole("seeds[...]", s, low=0)
            if len(set(seeds)) != len(seeds):
                raise SweepError(f"seeds must be distinct (a repeated seed repeats a run), got seeds={short(seeds)}")
        if base is not None and not isinstance(base, Mapping):
            raise SweepError(f"base must be a mapping of parameter names to values, got base={short(base)}")
        for name, text in (("monitor", monitor), ("mode", mode), ("study_name", study_name), ("storage", storage)):
            if text is not None and (not isinstance(text, str) or not text):
                raise SweepError(f"{name} must be a non-empty string, got {name}={short(text)}")
        for name, value in (("heartbeat", heartbeat), ("stale_after", stale_after)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise SweepError(f"{name} must be a finite number of seconds > 0, got {name}={short(value)}")
        if stale_after < 2 * heartbeat:
            raise SweepError(
                f"stale_after={stale_after!r} must be at least twice heartbeat={heartbeat!r}: a live trial beats every "
                "heartbeat seconds, and one not heard from in stale_after seconds is failed by another worker"
            )
        self.pruner_spec = pruner
        self._pruner()  # an unknown pruner is refused now, not when the first worker starts
        try:
            self.module = load_task(task)
        except RunError as error:
            raise SweepError(str(error)) from None
        self.task = task_id(self.module)
        self.experiment, self.root = experiment, os.fspath(root)
        self.sampler, self.n_trials, self.seed = sampler, n_trials, seed
        self.seeds = list(seeds) if seeds else None
        try:
            defaults = to_dict(make_params(self.module.Params))
            self.base = to_dict(make_params(self.module.Params, apply(defaults, dict(base or {}))))
        except (ParameterError, SpaceError) as error:
            raise SweepError(f"base parameters: {error}") from None
        if self.seeds is not None and "seed" not in self.base:
            raise SweepError(f"seeds={self.seeds!r} needs a 'seed' parameter in the task's Params")
        if self.seeds is not None and "seed" in self.dimensions:
            raise SweepError("give seeds either as seeds=[...] or as a 'seed' dimension, not both")
        self.monitor = str(monitor or getattr(self.module, "MONITOR", "valid_loss"))
        self.mode = str(mode or getattr(self.module, "MODE", "min" if self.monitor.endswith("loss") else "max"))
        if self.mode not in ("min", "max"):
            raise SweepError(f"mode={self.mode!r}: use 'min' or 'max'")
        self.points = self._plan()
        self._check_points()
        self._check_monitor()
        try:
            self.storage_url = storage or inside(self.root, experiment, "sweep.journal")
        except PathError as error:
            raise SweepError(str(error)) from None
        self.study_name = study_name or experiment
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.storage = open_storage(self.storage_url)

    # ------------------------------------------------------------------------------------------ planning
    def _plan(self) -> list[dict[str, Any]]:
        """The configurations to enqueue (each with its seed), or [] for TPE (suggested while running)."""
        if self.sampler == "grid":
            configs = grid(self.dimensions, self.seed)
        elif self.sampler == "random":
            configs = self._draw_random()
        else:
            return []
        if self.seeds is None or self.sampler == "tpe":
            return configs
        return [{**c, "seed": s} for c in configs for s in self.seeds]

    def _draw_random(self) -> list[dict[str, Any]]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
        # Optuna's RandomSampler, seeded, draws every configuration up front, so that the draws do not depend
        # on which worker runs which trial.
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.seed))
        configs = []
        for _ in range(self.n_trials or 0):
            trial = study.ask()
            configs.append({name: dim.suggest(trial, name) for name, dim in self.dimensions.items()})
            study.tell(trial, 0.0)
        return configs

    def size(self) -> int:
        """How many trials the sweep runs (a grid: its points times its seeds)."""
        return len(self.points) if self.sampler != "tpe" else int(self.n_trials or 0)

    def _check_points(self) -> None:
        points = self.points or [{n: d.values(np.random.default_rng(self.seed))[0] for n, d in self.dimensions.items()}]
        for point in points:
            try:
                fit_budget(make_params(self.module.Params, apply(self.base, point)))
            except (ParameterError, SpaceError, ValueError) as error:
                raise SweepError(f"configuration {point}: {error}") from None

    def _check_monitor(self) -> None:
        """Build the Learner once (no training) and check its Metrics produce ``monitor``."""
        from ..callbacks.metrics import Metrics

        point = self.points[0] if self.points else {}
        params = make_params(self.module.Params, apply(self.base, point))
        try:
            learner = self.module.build(params, [])
        except (ValueError, TypeError, LookupError) as error:  # a misspelt schedule name in the task's own build
            raise SweepError(
                f"task {self.task!r} refused configuration {point}: {type(error).__name__}: {error}"
            ) from None
        metrics = next((cb for cb in learner.callbacks if isinstance(cb, Metrics)), None)
        if metrics is None:
            raise SweepError(f"task {self.task!r} has no Metrics callback, so no metric {self.monitor!r} to optimise")
        phases = ["train"] + (["valid"] if learner.valid_data is not None else [])
        produced = [f"{phase}_{name}" for phase in phases for name in metrics.names]
        if self.monitor not in produced:
            raise SweepError(f"no run of task {self.task!r} produces metric {self.monitor!r}; it produces {produced}")

    def fingerprint(self) -> str:
        """What identifies this sweep in its storage; joining a study made by a different sweep is refused."""
        spec = {
            "task": self.task,
            "dimensions": {n: repr(d) for n, d in self.dimensions.items()},
            "sampler": self.sampler,
            "n_trials": self.n_trials,
            "seed": self.seed,
            "seeds": self.seeds,
            "base": self.base,
            "monitor": self.monitor,
            "mode": self.mode,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------ the study
    def study(self) -> Any:
        """Create the study and enqueue the budget, or join it (waiting until its creator has enqueued).

        With a file storage (SQLite, journal) creation and filling happen under :func:`~loopkit.runs.storage.storage_lock`, so a study
        found unfilled while holding the lock was left by a creator that died: it is deleted and made again.
        """
        with storage_lock(self.storage_url):
            study = self._create_or_join()
        study.pruner = self._pruner()
        return study

    def _create_or_join(self) -> Any:
        import optuna

        direction = optuna.study.StudyDirection.MAXIMIZE if self.mode == "max" else optuna.study.StudyDirection.MINIMIZE
        locked = storage_file(self.storage_url) is not None
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.study_name, direction=direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            created = False
            if locked and not study.user_attrs.get("loopkit_ready"):
                # Its creator held this lock while filling it and died before the end: make it again.
                optuna.delete_study(study_name=self.study_name, storage=self.storage)
                study = optuna.create_study(storage=self.storage, study_name=self.study_name, direction=direction)
                created = True
        if created:
            study.set_user_attr("loopkit_fingerprint", self.fingerprint())
            study.set_user_attr("loopkit_size", self.size())
            study.set_user_attr("loopkit_monitor", self.monitor)
            for index, point in enumerate(self.points):
                study.enqueue_trial(point, user_attrs={"loopkit_point": index})
            for index in range(self.size() if self.sampler == "tpe" else 0):
                study.enqueue_trial({}, user_attrs={"loopkit_point": index})
            study.set_user_attr("loopkit_ready", True)
        else:
            deadline = time.time() + 120
            while not study.user_attrs.get("loopkit_ready"):
                if time.time() > deadline:
                    raise SweepError(
                        f"study {self.study_name!r} in {self.storage_url!r} was created but never filled "
                        "(its creator died while enqueueing?); delete it and start again"
                    )
                time.sleep(0.2)
                study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            if study.user_attrs.get("loopkit_fingerprint") != self.fingerprint():
                raise SweepError(
                    f"study {self.study_name!r} in {self.storage_url!r} holds a different sweep; give this one "
                    "another study_name (or experiment) or another storage"
                )
        return study

    def _pruner(self) -> Any:
        import optuna

        if self.pruner_spec in (None, "none"):
            return optuna.pruners.NopPruner()
        if self.pruner_spec == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
        if isinstance(self.pruner_spec, optuna.pruners.BasePruner):
            return self.pruner_spec
        raise SweepError(f"unknown pruner {short(self.pruner_spec)}; use 'median', 'none' or an optuna pruner")

    def print_plan(self, file: Any = None) -> None:
        """Say what will run: the grid's size (and its factors) or the budget, and where the study lives."""
        out = file or sys.stdout
        if self.sampler == "grid":
            factors = [len(d.values(np.random.default_rng(self.seed))) for d in self.dimensions.values()]
            factors += [len(self.seeds)] if self.seeds else []
            shape = " x ".join(map(str, factors))
            print(f"grid of {shape} = {self.size()} trials", file=out)
        else:
            print(f"{self.sampler} sampler (seed {self.seed}): {self.size()} trials", file=out)
        print(
            f"study {self.study_name!r} in {self.storage_url}; runs in {os.path.join(self.root, self.experiment)}",
            file=out,
        )

    # ------------------------------------------------------------------------------------------ working
    def run(self, *, quiet: bool = False, poll: float = 0.5) -> Any:
        """Work on the sweep until no trial waits or runs; returns the study. Start it in as many processes
        (and machines, with a database URL) as you like: they share the queue."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not quiet:
            self.print_plan()
        study = self.study()
        while True:
            self._fail_stale(study)
            trial_id = self._claim(study)
            if trial_id is None:
                if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                    return study
                time.sleep(poll)
                continue
            self._run_trial(study, trial_id, quiet)


__all__ = ["SAMPLERS", "Sweep"]
