"""SIGTERM and SIGINT end a run cleanly and say so at once: `run`, `resume`, a sweep worker and the demo save at
the next step boundary, record PREEMPTED with the signal named, exit with status 75, and resume immediately
(issue 23, point 4). Every child process is waited on with a timeout."""

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

from loopkit.runs import cli
from loopkit.runs.record import Run
from loopkit.runs.storage import open_storage

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT = 120  # seconds per child; a hang fails the test


def _start(argv, slow=True):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    if slow:  # 0.2 s at the start of every epoch from the second on: time to signal it mid-run
        env.update(LOOPKIT_TEST_SLEEP="0.2", LOOPKIT_TEST_SLEEP_AFTER="1")
    return subprocess.Popen(
        [sys.executable, *argv], cwd=HERE.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _signal_once_training(proc, run_dir, signum):
    """Wait until the run is STARTED with a checkpoint on disk, then send ``signum``; the exit status and stderr."""
    deadline = time.time() + TIMEOUT
    checkpoints = run_dir / "checkpoints"
    try:
        while not (checkpoints.is_dir() and any(p.suffix == ".pt" for p in checkpoints.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the run never saved its first checkpoint"
            time.sleep(0.1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_run_is_preempted_at_once_and_resumes_immediately(tmp_path, monkeypatch, capsys, signum):
    monkeypatch.chdir(HERE.parent)
    task = "tests/runs_task.py"
    proc = _start(["-m", "loopkit.runs", "run", task, "--epochs=40", "--root", str(tmp_path), "--experiment=e",
                   "--run-name=a"])  # fmt: skip
    code, err = _signal_once_training(proc, tmp_path / "e" / "a", signum)
    name = signal.Signals(signum).name
    assert code == 75, err
    assert f"preempted by {name}" in err and "python -m loopkit.runs resume e/a" in err and "Traceback" not in err
    run = Run.load(tmp_path, "e", "a")
    assert (run.info["status"], run.info["reason"]) == ("PREEMPTED", name)
    assert cli.main(["show", "e/a", "--root", str(tmp_path)]) == 0
    assert f"run e/a: PREEMPTED ({name})" in capsys.readouterr().out
    stopped_at = run.info["epochs_done"]
    assert cli.main(["resume", "e/a", "--root", str(tmp_path)]) == 0  # no heartbeat wait
    run = Run.load(tmp_path, "e", "a")
    assert run.info["status"] == "FINISHED" and run.info["epochs_done"] == 40 and run.info["attempts"] == 2
    assert [row["epoch"] for row in run.metrics()] == list(range(40)) and stopped_at < 40


def test_a_signalled_resume_is_preempted_too(tmp_path, monkeypatch):
    monkeypatch.chdir(HERE.parent)
    Run.create(tmp_path, "e", {"epochs": 40}, name="b", task=_record(), monitor="valid_loss", mode="min")
    proc = _start(["-m", "loopkit.runs", "resume", "e/b", "--root", str(tmp_path)])
    code, err = _signal_once_training(proc, tmp_path / "e" / "b", signal.SIGTERM)
    assert code == 75 and "preempted by SIGTERM" in err, err
    assert Run.load(tmp_path, "e", "b").info["status"] == "PREEMPTED"


def _record():
    from loopkit.runs.task import load_task, task_record

    return task_record(load_task("tests/runs_task.py"))


def test_a_signalled_sweep_worker_requeues_its_trial_and_the_next_worker_resumes_it(tmp_path):
    spec = {"root": str(tmp_path), "experiment": "s", "dims": {"lr": {"single": 0.05}},
            "kw": {"base": {"epochs": 40}, "pruner": "none", "heartbeat": 0.5}}  # fmt: skip
    proc = _start([str(HERE / "sweep_worker.py"), json.dumps(spec)])
    code, err = _signal_once_training(proc, tmp_path / "s" / "trial-0000", signal.SIGTERM)
    assert code == 75, err
    assert Run.load(tmp_path, "s", "trial-0000").info["status"] == "PREEMPTED"
    storage = open_storage(str(tmp_path / "s" / "sweep.journal"))
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]  # failed and queued again
    again = _start([str(HERE / "sweep_worker.py"), json.dumps(spec)], slow=False)
    _, err = again.communicate(timeout=TIMEOUT)
    assert again.returncode == 0, err
    run = Run.load(tmp_path, "s", "trial-0000")
    assert run.info["status"] == "FINISHED" and run.info["attempts"] == 2 and run.info["epochs_done"] == 40


def test_a_signalled_demo_is_preempted(tmp_path):
    proc = _start(["-m", "loopkit.demo", "--epochs=400", "--quiet", "--root", str(tmp_path), "--run-name=d"], False)
    code, err = _signal_once_training(proc, tmp_path / "digits" / "d", signal.SIGTERM)
    assert code == 75 and "preempted by SIGTERM" in err and "Traceback" not in err, err
    run = Run.load(tmp_path, "digits", "d")
    assert (run.info["status"], run.info["reason"]) == ("PREEMPTED", "SIGTERM") and run.info["epochs_done"] < 400
