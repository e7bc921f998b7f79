"""Run records: status, metrics, reproducibility, TensorBoard hparams, killed runs and exact resume, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from loopkit.resume.load import load_checkpoint
from loopkit.runs import cli
from loopkit.runs.record import Run, list_runs
from loopkit.runs.runner import resume_run, run_task
from loopkit.runs.task import RunError

HERE = pathlib.Path(__file__).resolve().parent
TASK = str(HERE / "runs_task.py")
REPO = HERE.parent


def hparams_of(logdir):
    """The hparams entry TensorBoard's plugin reads: parameter name -> value, from the event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = {}
    for root, _, files in os.walk(logdir):
        for name in files:
            if "tfevents" not in name:
                continue
            for event in EventFileLoader(os.path.join(root, name)).Load():
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name != "hparams":
                        continue
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, v in data.session_start_info.hparams.items():
                            found[key] = v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
    return found


def test_a_finished_run_records_everything(tmp_path):
    seen = []

    class Spy:
        def after_epoch(self, learner):
            seen.append(Run.load(tmp_path, "exp", "r1").info["status"])

    run = run_task(
        TASK, {"epochs": 3, "lr": 0.1, "seed": 7}, experiment="exp", root=tmp_path, name="r1", callbacks=[Spy()]
    )
    info = json.loads((tmp_path / "exp" / "r1" / "run.json").read_text())
    assert seen == ["STARTED"] * 3 and info["status"] == "FINISHED" and info["error"] is None
    assert info["created"] <= info["started"] <= info["ended"]
    assert info["params"] == {
        "epochs": 3,
        "lr": 0.1,
        "scheduler": "constant",
        "scheduler_options": {},
        "seed": 7,
        "fail_at_epoch": -1,
        "width": 4,
    }
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all({"train_loss", "valid_loss"} <= set(r) for r in rows)
    best = min(rows, key=lambda r: r["valid_loss"])
    assert info["best"] == {"metric": "valid_loss", "value": best["valid_loss"], "epoch": best["epoch"]}
    assert info["final"] == {k: v for k, v in rows[-1].items() if k != "epoch"}
    repro = info["repro"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert repro["git_commit"] == head and isinstance(repro["git_dirty"], bool)
    assert (repro["seed"], repro["python"], repro["torch"]) == (7, platform.python_version(), torch.__version__)
    assert repro["loopkit"] and repro["executable"] == sys.executable
    assert repro["command"] == shlex.join(sys.orig_argv)  # as typed, "python -m ..." included
    # the checkpoint of the last epoch and a TensorBoard hparams entry holding the user's parameters
    # the last epoch's checkpoint, and the best monitored epoch's
    assert sorted(os.listdir(tmp_path / "exp" / "r1" / "checkpoints")) == ["best.pt", "epoch-0003.pt"]
    hp = hparams_of(tmp_path / "exp" / "r1" / "tensorboard")
    assert hp["lr"] == 0.1 and hp["seed"] == 7 and hp["scheduler"] == "constant" and hp["scheduler_options"] == "{}"


def test_a_failing_run_is_failed_with_its_error_and_the_error_propagates(tmp_path):
    with pytest.raises(RuntimeError, match="planned failure in epoch 1"):
        run_task(TASK, {"epochs": 3, "fail_at_epoch": 1}, experiment="exp", root=tmp_path, name="bad")
    run = Run.load(tmp_path, "exp", "bad")
    assert run.info["status"] == "FAILED" and run.info["reason"] == "error"
    assert run.info["error"] == "RuntimeError: planned failure in epoch 1" and run.info["epochs_done"] == 1
    with pytest.raises(RunError, match="unknown schedule 'nope'"):
        run_task(TASK, {"scheduler": "nope"}, experiment="exp", root=tmp_path, name="unbuilt")
    assert not (tmp_path / "exp" / "unbuilt").exists()  # refused by build, before the fit: nothing recorded


def test_names_are_unique_and_checked(tmp_path):
    Run.create(tmp_path, "exp", {}, name="x")
    with pytest.raises(FileExistsError, match=r"exp/x already exists.*resume"):
        Run.create(tmp_path, "exp", {}, name="x")
    with pytest.raises(ValueError, match=r"run name '\.\./x'"):
        Run.create(tmp_path, "exp", {}, name="../x")
    a, b = Run.create(tmp_path, "exp", {}), Run.create(tmp_path, "exp", {})
    assert a.name != b.name


def test_a_stale_heartbeat_reads_as_interrupted(tmp_path):
    run = Run.create(tmp_path, "exp", {}, name="r")
    run.start()
    assert run.effective(stale_after=60) == ("STARTED", None)
    past = time.time() - 120
    (tmp_path / "exp" / "r" / "heartbeat").write_text(repr(past))
    assert run.effective(stale_after=60) == ("FAILED", "interrupted")


KILLED_RUN = """
import sys
from loopkit.runs.runner import run_task
run_task(sys.argv[1], {"epochs": 4, "lr": 0.1, "seed": 3}, experiment="exp", root=sys.argv[2], name="killed",
         heartbeat=0.1)
"""


def _run_that_sleeps_after_epoch_2(tmp_path):
    """Start KILLED_RUN, which sleeps after its second checkpoint with its heartbeat going; return it once there."""
    env = dict(os.environ, LOOPKIT_TEST_SLEEP="60", LOOPKIT_TEST_SLEEP_AFTER="2", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, TASK, str(tmp_path)], env=env)
    checkpoint = tmp_path / "exp" / "killed" / "checkpoints" / "epoch-0002.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not checkpoint.exists():
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError("the run never reached its second checkpoint")
    time.sleep(0.3)  # the process sleeps after epoch 2; its heartbeat goes on
    return proc


def test_a_killed_run_shows_interrupted_and_resumes_exactly(tmp_path):
    reference = run_task(TASK, {"epochs": 4, "lr": 0.1, "seed": 3}, experiment="exp", root=tmp_path, name="whole")
    proc = _run_that_sleeps_after_epoch_2(tmp_path)
    try:
        run = Run.load(tmp_path, "exp", "killed")
        assert run.effective(stale_after=1.0) == ("STARTED", None)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    time.sleep(1.2)
    run = Run.load(tmp_path, "exp", "killed")
    assert run.info["status"] == "STARTED" and run.effective(stale_after=1.0) == ("FAILED", "interrupted")
    listing = cli.list_table(list_runs(tmp_path, "exp"), "valid_loss", stale_after=1.0)
    assert "FAILED (interrupted)" in listing
    with pytest.raises(ValueError, match="looks alive"):
        resume_run(tmp_path, "exp", "killed", stale_after=3600)

    resumed = resume_run(tmp_path, "exp", "killed", stale_after=1.0)
    assert resumed.dir == str(tmp_path / "exp" / "killed") and resumed.info["status"] == "FINISHED"
    assert resumed.info["attempts"] == 2
    assert resumed.metrics() == reference.metrics()  # every epoch's metrics, bit for bit
    ours = load_checkpoint(tmp_path / "exp" / "killed" / "checkpoints" / "epoch-0004.pt")["model"]
    theirs = load_checkpoint(tmp_path / "exp" / "whole" / "checkpoints" / "epoch-0004.pt")["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    with pytest.raises(ValueError, match="FINISHED; there is nothing to resume"):
        resume_run(tmp_path, "exp", "killed")


def test_cli_lists_sorted_shows_and_refuses_unknown_metrics(tmp_path, capsys):
    for name, lr in (("slow", 0.01), ("fast", 0.1), ("mid", 0.03)):
        run_task(TASK, {"epochs": 2, "lr": lr}, experiment="exp", root=tmp_path, name=name)
    assert cli.main(["list", "exp", "--root", str(tmp_path), "--sort", "valid_loss"]) == 0
    out = capsys.readouterr().out.splitlines()
    order = [line.split()[0] for line in out[2:]]
    best = {n: Run.load(tmp_path, "exp", n).info["best"]["value"] for n in ("slow", "fast", "mid")}
    assert order == sorted(best, key=best.get)  # lowest loss first
    assert cli.main(["runs", "list", "exp", "--root", str(tmp_path), "--sort", "valid_loss", "--desc"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == order[::-1]
    assert cli.main(["list", "exp", "--root", str(tmp_path), "--sort", "valid_acc"]) == 2
    assert "no run produces metric 'valid_acc'; they produce: train_loss, valid_loss" in capsys.readouterr().err
    assert cli.main(["show", "exp/fast", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run exp/fast: FINISHED" in out and '"lr": 0.1' in out and "best valid_loss" in out
    assert cli.main(["show", "exp/none", "--root", str(tmp_path)]) == 2
    assert "runs there: fast, mid, slow" in capsys.readouterr().err


def test_cli_run_and_resume_a_task_by_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", TASK, "--epochs=2", "--lr", "0.02", "--experiment=e", "--run-name=a"]) == 0
    run = Run.load("runs", "e", "a")
    assert run.info["status"] == "FINISHED" and run.params["lr"] == 0.02
    assert run.info["task"] == {"file": TASK, "sha256": hashlib.sha256(pathlib.Path(TASK).read_bytes()).hexdigest()}
    with pytest.raises(SystemExit):
        cli.main(["run", TASK, "--epochs=0"])
    assert "parameter 'epochs' must be >= 1, got epochs=0" in capsys.readouterr().err


def test_only_rank_0_writes_the_record_and_ranks_must_agree_on_a_name(tmp_path, monkeypatch):
    from loopkit.runs import recorder, runner

    monkeypatch.setattr(runner, "is_main_process", lambda: False)
    monkeypatch.setattr(recorder, "is_main_process", lambda: False)
    with pytest.raises(ValueError, match="every rank must agree on the run's name"):
        run_task(TASK, {"epochs": 1}, experiment="exp", root=tmp_path)
    run = run_task(TASK, {"epochs": 1}, experiment="exp", root=tmp_path, name="r")
    assert run.name == "r" and not (tmp_path / "exp" / "r" / "run.json").exists()


def test_run_records_get_the_umask_mode(tmp_path):
    from loopkit.runs.record import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "run.json"), "{}")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "run.json").st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert os.listdir(tmp_path) == ["run.json"]


def test_the_command_line_records_a_task_under_its_own_experiment(tmp_path, capsys):
    # python -m loopkit.demo and python -m loopkit.runs run loopkit.demo must land in the same experiment.
    flags = ["--epochs=1", "--quiet", "--runs-root", str(tmp_path)]
    assert cli.main(["run", "loopkit.demo", *flags, "--run-name", "a"]) == 0
    assert cli.main(["run", "loopkit.demo", *flags, "--run-name", "b", "--experiment", "other"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["digits", "other"]
    assert [r.name for r in list_runs(str(tmp_path), "digits")] == ["a"]


def test_a_run_still_training_is_not_resumed_a_second_time_even_with_a_stale_heartbeat(tmp_path):
    # A sweep resumes an interrupted trial's run with stale_after=0; a worker slowed past its heartbeat is still
    # training it. The run's lock refuses the second trainer before it writes anything.
    proc = _run_that_sleeps_after_epoch_2(tmp_path)
    try:
        before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
        before = [entry for entry in before if entry[0].name != "heartbeat"]
        with pytest.raises(RunError, match="being trained by another process on this machine"):
            resume_run(tmp_path, "exp", "killed", stale_after=0.0)
        after = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file())
        assert [entry for entry in after if entry[0].name != "heartbeat"] == before
        assert proc.poll() is None  # the first trainer goes on
    finally:
        proc.kill()
        proc.wait(timeout=30)
    resumed = resume_run(tmp_path, "exp", "killed", stale_after=0.0)  # its trainer is dead: the lock is free
    assert resumed.info["status"] == "FINISHED" and resumed.info["attempts"] == 2


def test_a_run_lock_that_is_a_link_out_of_the_root_is_refused_and_nothing_is_made_there(tmp_path):
    # A crafted run directory (a shared disk, an archive) may hold run.lock as a link to anywhere: the lock is
    # never followed, and the resume is refused before anything is written.
    from loopkit.runs.paths import PathError

    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    run = Run.create(root, "exp", {"epochs": 1, "lr": 0.1}, name="r", task={"path": TASK}, monitor="valid_loss",
                     mode="min")  # fmt: skip
    run.finish("FAILED", "stopped", "interrupted")
    (root / "exp" / "r" / "run.lock").symlink_to(outside / "planted")
    before = (root / "exp" / "r" / "run.json").read_bytes()
    with pytest.raises(PathError, match=r"run\.lock.*(outside the run root|is a symbolic link)"):
        resume_run(root, "exp", "r", task=TASK)
    assert not (outside / "planted").exists() and os.listdir(outside) == []
    assert (root / "exp" / "r" / "run.json").read_bytes() == before


@pytest.mark.parametrize(
    "planted", ["output.log", "run.json", "metrics.jsonl", "heartbeat", "checkpoints/epoch-0002.pt"]
)
def test_a_run_file_linked_out_of_the_root_is_neither_read_nor_written_through(tmp_path, planted):
    # A crafted run directory whose files link to a user's files elsewhere: resuming, loading or showing the run
    # must not append to them (output.log) or read them (run.json, metrics.jsonl, heartbeat).
    from loopkit.runs.paths import PathError

    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious.txt"
    content = f"{time.time()!r}\n" if planted == "heartbeat" else "the user's own file\n"  # a heartbeat reads a time
    precious.write_text(content)
    run = run_task(TASK, {"epochs": 1, "lr": 0.1}, experiment="exp", root=root, name="r")
    run.info["status"] = "FAILED"
    run.save()
    target = root / "exp" / "r" / planted
    if target.exists():
        target.unlink()
    target.symlink_to(precious)
    if planted.startswith("checkpoints/"):  # the newest file there, so that a resume would take it
        os.utime(precious, (time.time() + 100, time.time() + 100))
    if planted == "heartbeat":
        assert Run.load(root, "exp", "r").heartbeat_age() is None  # not read: as if there were none
    elif planted == "run.json":
        with pytest.raises(PathError, match="outside the run root"):
            Run.load(root, "exp", "r")
    elif planted == "metrics.jsonl":
        with pytest.raises(PathError, match="outside the run root"):
            Run.load(root, "exp", "r").metrics()
    else:  # output.log, or the newest checkpoint: resuming would append to it or load it
        with pytest.raises(PathError, match="outside the run root"):
            resume_run(root, "exp", "r", task=TASK)
    assert precious.read_text() == content
