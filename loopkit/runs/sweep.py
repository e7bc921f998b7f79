"""Sweeps on Optuna: every trial is a recorded run; any number of workers share one storage.

How the parts map onto Optuna (``optuna`` is imported when a sweep is made, not with loopkit):

- **The study** lives in a storage: a journal file (``<root>/<experiment>/sweep.journal``, the default), an
  SQLite file (``sweep.db``) or any database URL Optuna accepts (``postgresql://...``, for workers on several
  machines). It survives a crash: running the same sweep again joins the study and continues.
- **The queue.** The first worker creates the study and enqueues the whole budget at once
  (``study.enqueue_trial``): every grid point (times every seed), or, for ``sampler="random"``, ``n_trials``
  configurations drawn up front from the seeded generator, or, for ``"tpe"``, ``n_trials`` empty trials whose
  parameters TPE suggests when they start. A worker claims a waiting trial the way Optuna's own ``ask`` does
  (``storage.set_trial_state_values(..., RUNNING)`` succeeds for exactly one caller), and never creates a
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

import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .parameters import ParameterError, make_params, to_dict
from .record import FINISHED, HEARTBEAT_S, STALE_AFTER_S, Run
from .runner import fit_budget, load_task, resume_run, run_task, task_id
from .space import Dimension, SpaceError, apply, grid, space
from .table import table

SAMPLERS = ("grid", "random", "tpe")
_HEARTBEAT_ATTR = "loopkit_heartbeat"
_PARAMS_ATTR = "loopkit_params"


class SweepError(ValueError):
    """A sweep that cannot run as given; raised before any trial runs."""


def open_storage(storage: str) -> Any:
    """An Optuna storage for ``storage``: a ``.journal``/``.log`` file path, a ``.db``/``.sqlite`` file path, or a
    database URL (``sqlite:///x.db``, ``postgresql://user@host/db``, ``mysql://...``).

    Raises:
        SweepError: the storage cannot be opened (the URL and the cause are in the message).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not isinstance(storage, str) or not storage:
        raise SweepError(f"storage must be a file path or a database URL, got {storage!r}")
    try:
        if "://" in storage:
            kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
            return optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
        directory = os.path.dirname(os.path.abspath(storage))
        os.makedirs(directory, exist_ok=True)
        if storage.endswith((".db", ".sqlite", ".sqlite3")):
            url = "sqlite:///" + os.path.abspath(storage)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return JournalStorage(JournalFileBackend(os.path.abspath(storage)))
    except Exception as error:
        raise SweepError(f"cannot open the sweep storage {storage!r}: {type(error).__name__}: {error}") from None


class Sweep:
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
            self.dimensions: dict[str, Dimension] = space(dimensions)
        except SpaceError as error:
            raise SweepError(str(error)) from None
        if sampler not in SAMPLERS:
            raise SweepError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
        if sampler != "grid" and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
            raise SweepError(f"sampler={sampler!r} needs a budget: n_trials >= 1, got n_trials={n_trials!r}")
        if sampler == "grid" and n_trials is not None:
            raise SweepError(
                f"n_trials={n_trials!r} with sampler='grid': a grid runs every combination of its dimensions; "
                "leave n_trials out, or use sampler='random' or 'tpe' for a budget of n_trials"
            )
        self.module = load_task(task)
        self.task = task_id(self.module)
        self.experiment, self.root = experiment, os.fspath(root)
        self.sampler, self.n_trials, self.seed = sampler, n_trials, seed
        self.seeds = list(seeds) if seeds else None
        defaults = to_dict(make_params(self.module.Params))
        try:
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
        self.storage_url = storage or os.path.join(self.root, experiment, "sweep.journal")
        self.study_name = study_name or experiment
        self.pruner_spec = pruner
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

        params = make_params(self.module.Params, apply(self.base, self.points[0] if self.points else {}))
        learner = self.module.build(params, [])
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
        """Create the study and enqueue the budget, or join it (waiting until its creator has enqueued)."""
        import optuna

        direction = optuna.study.StudyDirection.MAXIMIZE if self.mode == "max" else optuna.study.StudyDirection.MINIMIZE
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.study_name, direction=direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            created = False
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
        study.pruner = self._pruner()
        return study

    def _pruner(self) -> Any:
        import optuna

        if self.pruner_spec in (None, "none"):
            return optuna.pruners.NopPruner()
        if self.pruner_spec == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
        if isinstance(self.pruner_spec, optuna.pruners.BasePruner):
            return self.pruner_spec
        raise SweepError(f"unknown pruner {self.pruner_spec!r}; use 'median', 'none' or an optuna pruner")

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

    def _claim(self, study: Any) -> int | None:
        import optuna

        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            try:
                if self.storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.RUNNING):
                    self.storage.set_trial_system_attr(trial._trial_id, _HEARTBEAT_ATTR, time.time())
                    return int(trial._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _fail_stale(self, study: Any) -> None:
        import optuna

        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            beat = trial.system_attrs.get(_HEARTBEAT_ATTR)
            if beat is not None and now - beat <= self.stale_after:
                continue
            if beat is None and trial.datetime_start and now - trial.datetime_start.timestamp() <= self.stale_after:
                continue
            try:
                self.storage.set_trial_user_attr(trial._trial_id, "loopkit_reason", "interrupted")
                won = self.storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if not won:
                continue
            for name in trial.user_attrs.get("loopkit_runs", []):
                with contextlib.suppress(FileNotFoundError):
                    run = Run.load(self.root, self.experiment, name)
                    if run.info["status"] not in ("FINISHED", "FAILED", "PRUNED"):
                        run.finish("FAILED", "the worker running it stopped (stale heartbeat)", "interrupted")
            self._retry(study, trial)

    @staticmethod
    def _retry(study: Any, trial: Any) -> None:
        """Queue a new trial with ``trial``'s parameters that resumes its runs."""
        fixed = trial.system_attrs.get("fixed_params") or trial.params
        attrs = {
            "loopkit_point": trial.user_attrs.get("loopkit_point"),
            "loopkit_retry_of": trial.number,
            "loopkit_resume_runs": trial.user_attrs.get("loopkit_runs", []),
        }
        study.enqueue_trial(fixed, user_attrs=attrs)

    def _params_for(self, trial: Any) -> dict[str, Any]:
        if self.sampler == "tpe":
            # A retry was enqueued with the interrupted trial's values as fixed parameters: suggest returns them.
            return {name: dim.suggest(trial, name) for name, dim in self.dimensions.items()}
        fixed = self.storage.get_trial(trial._trial_id).system_attrs.get("fixed_params", {})
        point = {}
        for name, dim in self.dimensions.items():
            value = fixed[name]
            # Record the value as the trial's parameter, in the dimension's own distribution where it has one.
            choices = dim.values(np.random.default_rng(self.seed)) if self.sampler == "grid" else None
            if choices is not None and len(choices) > 1 and value in choices:
                trial.suggest_categorical(name, choices)
            elif self.sampler == "random":
                dim.suggest(trial, name)
            else:
                trial.set_user_attr(f"param:{name}", value)
            point[name] = value
        if "seed" in fixed and self.seeds is not None:
            point["seed"] = fixed["seed"]
            trial.set_user_attr("seed", fixed["seed"])
        return point

    def _run_trial(self, study: Any, trial_id: int, quiet: bool) -> None:
        import optuna

        from .pruning import OptunaPruning
        from .record import Heartbeat

        if self.sampler == "tpe":
            # Seeded per trial number: one worker reproduces a sweep exactly; several stay distinct.
            study.sampler = optuna.samplers.TPESampler(seed=self.seed + trial_id, constant_liar=True)
        else:
            study.sampler = optuna.samplers.RandomSampler(seed=self.seed + trial_id)
        trial = optuna.trial.Trial(study, trial_id)
        storage = self.storage
        beat = Heartbeat(
            [lambda: storage.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())], self.heartbeat
        )
        beat.start()
        state, value, error = optuna.trial.TrialState.COMPLETE, None, None
        try:
            point = self._params_for(trial)
            # What the trial really runs with, every dimension included (a Single is never a sampler's
            # parameter, so trial.params alone leaves it out): results and best_params read this.
            trial.set_user_attr(_PARAMS_ATTR, point)
            seeds = self.seeds if (self.sampler == "tpe" and self.seeds) else [point.get("seed")]
            resume = list(trial.user_attrs.get("loopkit_resume_runs") or [])
            names = [
                f"trial-{trial.number:04d}" + (f"-seed{s}" if self.sampler == "tpe" and self.seeds else "")
                for s in seeds
            ]
            if resume:
                names = resume
            trial.set_user_attr("loopkit_runs", names)
            values = []
            for i, (name, s) in enumerate(zip(names, seeds)):
                params = apply(self.base, {k: v for k, v in point.items() if k != "seed" or s is not None})
                if s is not None:
                    params["seed"] = s
                pruning = [OptunaPruning(trial, self.monitor)] if i == 0 else []
                if not quiet:
                    print(f"trial {trial.number}: {name} {json.dumps(point)}", flush=True)
                run = self._start_or_resume(name, params, pruning, resume_ok=bool(resume))
                run.add_trial(self.study_name, trial.number)
                best = run.value(self.monitor)
                if best is None:
                    raise SweepError(f"run {name} produced no {self.monitor!r}")
                values.append(best)
            value = statistics.fmean(values)
        except optuna.TrialPruned:
            state = optuna.trial.TrialState.PRUNED
        except KeyboardInterrupt:
            beat.stop()
            self._tell(study, trial, optuna.trial.TrialState.FAIL, None, "interrupted")
            self._retry(study, self.storage.get_trial(trial_id))
            raise
        except Exception as exc:
            state, error = optuna.trial.TrialState.FAIL, exc
            if not quiet:
                print(f"trial {trial.number} failed: {type(exc).__name__}: {exc}", flush=True)
        finally:
            beat.stop()
        self._tell(study, trial, state, value, None if error is None else f"{type(error).__name__}: {error}")

    def _start_or_resume(self, name: str, params: dict[str, Any], callbacks: list, resume_ok: bool) -> Run:
        if resume_ok and os.path.isdir(os.path.join(self.root, self.experiment, name)):
            run = Run.load(self.root, self.experiment, name)
            if run.info["status"] == FINISHED:
                return run
            return resume_run(
                self.root, self.experiment, name, stale_after=0.0, callbacks=callbacks, heartbeat=self.heartbeat
            )
        return run_task(
            self.module,
            params,
            experiment=self.experiment,
            root=self.root,
            name=name,
            monitor=self.monitor,
            mode=self.mode,
            callbacks=callbacks,
            heartbeat=self.heartbeat,
        )

    def _tell(self, study: Any, trial: Any, state: Any, value: float | None, error: str | None) -> None:
        import optuna

        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if error is not None:
                trial.set_user_attr("loopkit_error", error)
                trial.set_user_attr("loopkit_reason", "interrupted" if error == "interrupted" else "error")
            if state == optuna.trial.TrialState.COMPLETE:
                study.tell(trial, value)
            else:
                study.tell(trial, state=state)

    # ------------------------------------------------------------------------------------------ results
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
        point = dict(trial.user_attrs.get(_PARAMS_ATTR) or trial.system_attrs.get("fixed_params") or trial.params)
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

        path = os.fspath(path or os.path.join(self.root, self.experiment, "sweep.png"))
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


def from_config(config: Mapping[str, Any], **overrides: Any) -> Sweep:
    """A Sweep from a YAML/TOML mapping: ``task``, ``parameters`` (the dimensions), and any of Sweep's keyword
    arguments (``experiment``, ``sampler``, ``n_trials``, ``seed``, ``seeds``, ``base``, ``monitor``, ``mode``,
    ``storage``, ``study_name``, ``pruner``, ``root``, ``heartbeat``, ``stale_after``)."""
    config = {**config, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f for f in Sweep.__init__.__code__.co_varnames if not f.startswith("_")} - {"self", "task", "dimensions"}
    unknown = sorted(set(config) - known - {"task", "parameters"})
    if unknown:
        raise SweepError(
            f"unknown sweep setting(s) {', '.join(map(repr, unknown))}; known: task, parameters, {', '.join(sorted(known))}"
        )
    if "task" not in config:
        raise SweepError("the sweep file needs a 'task' (a module name such as loopkit.demo, or a .py file)")
    kwargs = {k: v for k, v in config.items() if k not in ("task", "parameters")}
    kwargs.setdefault("experiment", "sweep")
    return Sweep(config["task"], config.get("parameters") or {}, **kwargs)


__all__ = ["SAMPLERS", "Sweep", "SweepError", "from_config", "open_storage"]
