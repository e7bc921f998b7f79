"""The multi-worker sweep tests of test_runs_sweep_workers.py, with the study on a PostgreSQL server (Optuna's
RDB storage): workers share one study, every grid point runs once, a budget is exact, a killed worker's trial
is failed as interrupted and retried.

``.ci/run`` starts a throwaway loopback-only PostgreSQL cluster and sets ``LOOPKIT_TEST_POSTGRES_URL``; without
it (or without psycopg2, the ``postgres`` extra) these tests are skipped, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
import uuid

import optuna
import pytest

from loopkit.runs.storage import open_storage
from tests.test_runs_sweep_workers import TIMEOUT, S, start, wait_all

URL = os.environ.get("LOOPKIT_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.skipif(URL is None, reason="LOOPKIT_TEST_POSTGRES_URL is not set (.ci/run starts a server)"),
    pytest.mark.skipif(
        importlib.util.find_spec("psycopg2") is None,
        reason="psycopg2 is not installed (pip install 'loopkit[postgres]')",
    ),
]


def experiment(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"  # one study per test run, in a server that outlives it


def trials(name):
    return optuna.load_study(study_name=name, storage=open_storage(URL)).get_trials()


def test_three_workers_on_postgres_run_each_grid_point_exactly_once(tmp_path):
    name = experiment("g")
    spec = {
        "root": str(tmp_path),
        "experiment": name,
        "dims": {"lr": {"multiple": [0.02, 0.05, 0.1]}, "width": {"multiple": [2, 4]}},
        "kw": {"base": {"epochs": 1}, "pruner": "none", "heartbeat": 0.5, "storage": URL},
    }
    wait_all([start(spec) for _ in range(3)])  # started together: they race to create the study
    done = trials(name)
    assert len(done) == 6 and all(t.state == S.COMPLETE for t in done)
    assert sorted((t.params["lr"], t.params["width"]) for t in done) == sorted(
        (lr, w) for lr in (0.02, 0.05, 0.1) for w in (2, 4)
    )


def test_a_shared_tpe_budget_on_postgres_is_honoured_exactly(tmp_path):
    name = experiment("t")
    kw = {"sampler": "tpe", "n_trials": 5, "base": {"epochs": 1}, "pruner": "none", "heartbeat": 0.5, "storage": URL}
    tpe = {
        "root": str(tmp_path),
        "experiment": name,
        "dims": {"lr": {"logspace": {"start": -2, "end": -1, "count": 5}}},
    }
    wait_all([start({**tpe, "kw": kw}), start({**tpe, "kw": kw})])
    assert [t.state for t in trials(name)] == [S.COMPLETE] * 5


def test_a_killed_worker_on_postgres_leaves_an_interrupted_trial_that_a_new_trial_resumes(tmp_path):
    name = experiment("k")
    kw = {"base": {"epochs": 3, "seed": 4}, "pruner": "none", "heartbeat": 0.2, "stale_after": 2.0, "storage": URL}
    spec = {"root": str(tmp_path), "experiment": name, "dims": {"lr": {"multiple": [0.1, 0.05]}}, "kw": kw}
    doomed = start(spec, {"LOOPKIT_TEST_SLEEP": "120", "LOOPKIT_TEST_SLEEP_AFTER": "1"})
    checkpoint = tmp_path / name / "trial-0000" / "checkpoints" / "epoch-0001.pt"
    try:
        deadline = time.time() + TIMEOUT
        while not checkpoint.exists() and doomed.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), doomed.communicate()[0] if doomed.poll() is not None else "no checkpoint"
        doomed.send_signal(signal.SIGKILL)
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
    assert [t.state for t in trials(name)] == [S.RUNNING, S.WAITING]  # what the kill left behind
    wait_all([start(spec)])  # a new worker: fails the stale trial, runs the other, resumes the first
    first, other, retry = trials(name)
    assert first.state == S.FAIL and first.user_attrs["loopkit_reason"] == "interrupted"
    assert other.state == S.COMPLETE and retry.state == S.COMPLETE
    assert retry.params == first.params == {"lr": 0.1} and retry.user_attrs["loopkit_retry_of"] == 0
