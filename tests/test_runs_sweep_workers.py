"""Several worker processes on one sweep storage: each grid point once, exact budgets, pruned sweeps end,
simultaneous starts, and a killed worker's trial failed as interrupted, then resumed under a new trial."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import optuna
import pytest

from loopkit.runs.record import Run
from loopkit.runs.runner import run_task
from loopkit.runs.storage import open_storage

HERE = pathlib.Path(__file__).resolve().parent
TASK = str(HERE / "runs_task.py")
TIMEOUT = 300  # seconds for all workers of one test; a hang fails instead of stalling CI
S = optuna.trial.TrialState


def start(spec, env=None):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), **(env or {}))
    return subprocess.Popen(
        [sys.executable, str(HERE / "sweep_worker.py"), json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_all(procs):
    deadline = time.time() + TIMEOUT
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
            assert p.returncode == 0, out
    finally:
        for p in procs:
            p.kill()


def trials(root, experiment):
    storage = open_storage(os.path.join(root, experiment, "sweep.journal"))
    return optuna.load_study(study_name=experiment, storage=storage).get_trials()


def test_three_workers_run_each_grid_point_exactly_once(tmp_path):
    spec = {
        "root": str(tmp_path),
        "experiment": "g",
        "dims": {"lr": {"multiple": [0.02, 0.05, 0.1]}, "width": {"multiple": [2, 4]}},
        "kw": {"base": {"epochs": 1}, "pruner": "none", "heartbeat": 0.5},
    }
    wait_all([start(spec) for _ in range(3)])  # started together: they race to create the study
    done = trials(tmp_path, "g")
    assert len(done) == 6 and all(t.state == S.COMPLETE for t in done)
    assert sorted((t.params["lr"], t.params["width"]) for t in done) == sorted(
        (lr, w) for lr in (0.02, 0.05, 0.1) for w in (2, 4)
    )
    assert len({t.user_attrs["loopkit_runs"][0] for t in done}) == 6


def test_a_shared_tpe_budget_is_honoured_exactly_and_an_all_pruned_sweep_ends(tmp_path):
    tpe = {
        "root": str(tmp_path),
        "experiment": "t",
        "dims": {"lr": {"logspace": {"start": -2, "end": -1, "count": 5}}},
        "kw": {"sampler": "tpe", "n_trials": 5, "base": {"epochs": 1}, "pruner": "none", "heartbeat": 0.5},
    }
    pruned = {
        "root": str(tmp_path),
        "experiment": "p",
        "dims": {"lr": {"multiple": [0.01, 0.02, 0.05, 0.1]}},
        "kw": {"base": {"epochs": 3}, "pruner": "always", "heartbeat": 0.5},
    }
    wait_all([start(tpe), start(tpe), start(pruned), start(pruned)])
    assert [t.state for t in trials(tmp_path, "t")] == [S.COMPLETE] * 5
    done = trials(tmp_path, "p")
    assert sorted(t.params["lr"] for t in done) == [0.01, 0.02, 0.05, 0.1] and {t.state for t in done} == {S.PRUNED}


def test_a_killed_worker_leaves_an_interrupted_trial_that_a_new_trial_resumes(tmp_path):
    spec = {
        "root": str(tmp_path),
        "experiment": "k",
        "dims": {"lr": {"multiple": [0.1, 0.05]}},
        "kw": {"base": {"epochs": 3, "seed": 4}, "pruner": "none", "heartbeat": 0.2, "stale_after": 2.0},
    }
    doomed = start(spec, {"LOOPKIT_TEST_SLEEP": "120", "LOOPKIT_TEST_SLEEP_AFTER": "1"})
    checkpoint = tmp_path / "k" / "trial-0000" / "checkpoints" / "epoch-0001.pt"
    try:
        deadline = time.time() + TIMEOUT
        while not checkpoint.exists() and doomed.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), doomed.communicate()[0] if doomed.poll() is not None else "no checkpoint"
        doomed.send_signal(signal.SIGKILL)
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
    assert [t.state for t in trials(tmp_path, "k")] == [S.RUNNING, S.WAITING]  # what the kill left behind

    wait_all([start(spec)])  # a new worker: fails the stale trial, runs the other, resumes the first
    done = trials(tmp_path, "k")
    assert all(t.state != S.RUNNING for t in done) and len(done) == 3
    first, other, retry = done
    assert first.state == S.FAIL and first.user_attrs["loopkit_reason"] == "interrupted"
    assert other.state == S.COMPLETE and retry.state == S.COMPLETE
    assert retry.params == first.params == {"lr": 0.1} and retry.user_attrs["loopkit_retry_of"] == 0
    run = Run.load(tmp_path, "k", "trial-0000")
    assert run.info["status"] == "FINISHED" and run.info["attempts"] == 2
    assert [t["number"] for t in run.info["trials"]] == [retry.number]
    reference = run_task(TASK, {"epochs": 3, "seed": 4, "lr": 0.1}, experiment="ref", root=tmp_path)
    assert run.metrics() == reference.metrics()  # the resumed run continued exactly
    assert retry.value == pytest.approx(min(r["valid_loss"] for r in reference.metrics()), rel=0, abs=0)
