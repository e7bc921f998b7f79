"""Running a sweep's trials: claiming a waiting trial, failing the stale ones, running and telling one.

:class:`TrialWorker` is the part of :class:`~loopkit.runs.sweep.Sweep` that works on the queue (see
:mod:`loopkit.runs.sweep` for how it maps onto Optuna): a worker claims a WAITING trial the way Optuna's
``ask`` does, stamps it with a heartbeat while its runs train, fails RUNNING trials whose heartbeat stopped and
queues them again to resume their runs, and tells each trial its outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from .record import FINAL_STATES, FINISHED, Run
from .runner import resume_run, run_task
from .space import Dimension, apply
from .storage import storage_lock
from .sweep_checks import SweepError, run_names
from .sweep_results import PARAMS_ATTR

HEARTBEAT_ATTR = "loopkit_heartbeat"


class TrialWorker:
    """Work on a sweep's trials; mixed into :class:`~loopkit.runs.sweep.Sweep`, which sets these attributes."""

    storage: Any
    storage_url: str
    study_name: str
    root: str
    experiment: str
    module: Any
    sampler: str
    seed: int
    seeds: list[int] | None
    base: dict[str, Any]
    dimensions: dict[str, Dimension]
    monitor: str
    mode: str
    heartbeat: float
    stale_after: float

    def _claim(self, study: Any) -> int | None:
        import optuna

        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            try:
                # SQLite ignores Optuna's SELECT ... FOR UPDATE: two workers could both read WAITING and both
                # set RUNNING, running one trial twice. The lock file makes the read and the write one step.
                with storage_lock(self.storage_url):
                    won = self.storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.RUNNING)
                if won:
                    self.storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
                    return int(trial._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _fail_stale(self, study: Any) -> None:
        import optuna

        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is not None and now - beat <= self.stale_after:
                continue
            if beat is None and trial.datetime_start and now - trial.datetime_start.timestamp() <= self.stale_after:
                continue
            try:
                with storage_lock(self.storage_url):  # one worker fails it and queues its retry (see _claim)
                    self.storage.set_trial_user_attr(trial._trial_id, "loopkit_reason", "interrupted")
                    won = self.storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            if not won:
                continue
            for name in run_names(trial.user_attrs.get("loopkit_runs")):
                with contextlib.suppress(FileNotFoundError, ValueError):  # a damaged record is left as it is
                    run = Run.load(self.root, self.experiment, name)
                    if run.info["status"] not in FINAL_STATES:
                        run.finish("FAILED", "the worker running it stopped (stale heartbeat)", "interrupted")
            self._retry(study, trial)

    @staticmethod
    def _retry(study: Any, trial: Any) -> None:
        """Queue a new trial with ``trial``'s parameters that resumes its runs."""
        fixed = trial.system_attrs.get("fixed_params") or trial.params
        attrs = {
            "loopkit_point": trial.user_attrs.get("loopkit_point"),
            "loopkit_retry_of": trial.number,
            "loopkit_resume_runs": run_names(trial.user_attrs.get("loopkit_runs")),
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
        beat = Heartbeat([lambda: storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())], self.heartbeat)
        beat.start()
        state, value, error = optuna.trial.TrialState.COMPLETE, None, None
        try:
            point = self._params_for(trial)
            # What the trial really runs with, every dimension included (a Single is never a sampler's
            # parameter, so trial.params alone leaves it out): results and best_params read this.
            trial.set_user_attr(PARAMS_ATTR, point)
            seeds = self.seeds if (self.sampler == "tpe" and self.seeds) else [point.get("seed")]
            resume = run_names(trial.user_attrs.get("loopkit_resume_runs"))
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
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM/SIGINT after the run saved (Preempted)
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
                self.root,
                self.experiment,
                name,
                task=self.module,  # the sweep's own task, never the one a record names
                stale_after=0.0,
                callbacks=callbacks,
                heartbeat=self.heartbeat,
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

        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError), storage_lock(self.storage_url):
            if error is not None:
                trial.set_user_attr("loopkit_error", error)
                trial.set_user_attr("loopkit_reason", "interrupted" if error == "interrupted" else "error")
            if state == optuna.trial.TrialState.COMPLETE:
                study.tell(trial, value)
            else:
                study.tell(trial, state=state)
