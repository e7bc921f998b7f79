"""A loaded file is data: a checkpoint never names a file to delete without proof that this run wrote it, and
resume runs only a task the user chose (issue 23, points 2 and 3)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil

import pytest

from loopkit.callbacks import Checkpoint
from loopkit.resume.file import save_atomic
from loopkit.resume.load import load_checkpoint
from loopkit.runs import cli
from loopkit.runs.record import Run
from loopkit.runs.runner import resume_run, run_task
from loopkit.runs.task import RunError, task_record, trusted_task

HERE = pathlib.Path(__file__).resolve().parent
TASK = str(HERE / "runs_task.py")


@pytest.fixture()
def task_module():
    from loopkit.runs.task import load_task

    return load_task(TASK)


def _fit(task_module, dirpath, keep_last, stop_at=-1, resume_from=None):
    """Fit the test task for 4 epochs, checkpointing every epoch; ``stop_at``: raise at that epoch's start."""
    checkpoint = Checkpoint(dirpath, keep_last=keep_last)
    learner = task_module.build(task_module.Params(epochs=4, fail_at_epoch=stop_at), [checkpoint])
    try:
        learner.fit(4, resume_from=resume_from)
    except RuntimeError as error:
        assert "planned failure" in str(error)
    return checkpoint


def _craft(path, pruning, out):
    state = load_checkpoint(path)
    state["callbacks"]["Checkpoint"]["pruning"] = pruning
    save_atomic(state, out)  # a valid header and checksum: anyone can make one


def test_files_a_loaded_checkpoint_names_are_deleted_only_with_this_runs_identity(task_module, tmp_path):
    d = tmp_path / "checkpoints"
    first = _fit(task_module, d, keep_last=3, stop_at=2)  # epoch-0001.pt, epoch-0002.pt, both this run's
    assert sorted(os.listdir(d)) == ["epoch-0001.pt", "epoch-0002.pt"]
    # A file of another run, under a name this run could have written: it lacks the identity, so it stays.
    other = _fit(task_module, tmp_path / "other", keep_last=1, stop_at=1)
    assert other.identity != first.identity
    shutil.copy(tmp_path / "other" / "epoch-0001.pt", d / "epoch-0001.pt")
    resumed = _fit(task_module, d, keep_last=1, resume_from=str(d / "epoch-0002.pt"))
    assert resumed.identity == first.identity
    # epoch-0002 (ours, proven) and epoch-0003 (written by this process) were pruned; the foreign file stayed.
    assert sorted(os.listdir(d)) == ["epoch-0001.pt", "epoch-0004.pt"]
    assert load_checkpoint(d / "epoch-0001.pt")["callbacks"]["Checkpoint"]["identity"] == other.identity


def test_a_crafted_checkpoint_cannot_delete_a_users_file(task_module, tmp_path):
    d = tmp_path / "checkpoints"
    _fit(task_module, d, keep_last=1, stop_at=1)
    (d / "precious.pt").write_bytes(b"the user's")
    _craft(d / "epoch-0001.pt", ["precious.pt"], d / "crafted.pt")
    with pytest.raises(ValueError, match="names Checkpoint never writes"):
        _fit(task_module, d, keep_last=1, resume_from=str(d / "crafted.pt"))
    (d / "epoch-0009.pt").write_bytes(b"the user's too")  # a name Checkpoint writes, but not a file of this run
    _craft(d / "epoch-0001.pt", ["epoch-0009.pt"], d / "crafted.pt")
    _fit(task_module, d, keep_last=1, resume_from=str(d / "crafted.pt"))
    assert (d / "precious.pt").read_bytes() == b"the user's" and (d / "epoch-0009.pt").read_bytes() == b"the user's too"


def test_resume_through_the_command_line_keeps_a_users_file_in_checkpoints(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(HERE.parent)  # the project: the task is recorded relative to it
    root = tmp_path / "runs"
    with pytest.raises(RuntimeError):
        run_task(TASK, {"epochs": 3, "fail_at_epoch": 1}, experiment="e", root=root, name="r")
    run = Run.load(root, "e", "r")
    run.info["params"]["fail_at_epoch"] = -1  # the resumed run goes to the end
    run.save()
    d = root / "e" / "r" / "checkpoints"
    (d / "epoch-0007.pt").write_bytes(b"keep me")
    _craft(d / "epoch-0001.pt", ["epoch-0007.pt"], d / "epoch-0001.pt")
    assert cli.main(["resume", "e/r", "--root", str(root)]) == 0
    assert (d / "epoch-0007.pt").read_bytes() == b"keep me"
    assert sorted(os.listdir(d)) == ["best.pt", "epoch-0003.pt", "epoch-0007.pt"]  # its own 0001, 0002 pruned


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A project directory holding a copy of the test task, as the working directory."""
    (tmp_path / "proj").mkdir()
    shutil.copy(TASK, tmp_path / "proj" / "task.py")
    monkeypatch.chdir(tmp_path / "proj")
    return tmp_path / "proj"


def _sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_the_task_is_recorded_relative_to_the_project_with_its_hash(project):
    run = run_task("task.py", {"epochs": 1}, experiment="e", root="runs", name="r")
    assert run.info["task"] == {"file": "task.py", "sha256": _sha(project / "task.py")}
    import loopkit.demo

    assert task_record(loopkit.demo) == {"module": "loopkit.demo", "sha256": _sha(loopkit.demo.__file__)}


def _unstarted(project, task):
    return Run.create("runs", "e", {"epochs": 1}, name="r", task=task, monitor="valid_loss", mode="min")


def test_resume_runs_an_unchanged_task_of_the_project(project):
    _unstarted(project, {"file": "task.py", "sha256": _sha(project / "task.py")})
    assert resume_run("runs", "e", "r").info["status"] == "FINISHED"


def test_a_changed_task_is_refused_until_named_explicitly(project, capsys):
    _unstarted(project, {"file": "task.py", "sha256": _sha(project / "task.py")})
    with open(project / "task.py", "a") as f:
        f.write("\n# edited\n")
    with pytest.raises(RunError, match="changed since the run was recorded"):
        resume_run("runs", "e", "r")
    assert cli.main(["resume", "e/r"]) == 2
    assert "changed since the run was recorded" in capsys.readouterr().err
    assert cli.main(["resume", "e/r", "--task", "task.py"]) == 0
    run = Run.load("runs", "e", "r")
    assert run.info["status"] == "FINISHED" and run.info["task"]["sha256"] == _sha(project / "task.py")


EVIL = "import pathlib\npathlib.Path('{marker}').write_text('ran')\n"


@pytest.mark.parametrize(
    "where, words",
    [("outside", "outside the project"), ("absolute", "outside the project"), ("in_root", "inside the run root")],
)
def test_a_task_outside_the_project_or_inside_the_run_root_never_runs(project, tmp_path, where, words):
    marker = tmp_path / "marker"
    evil = {"outside": tmp_path / "evil.py", "absolute": tmp_path / "evil.py", "in_root": project / "runs" / "evil.py"}[
        where
    ]
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_text(EVIL.format(marker=marker))
    recorded = {"outside": "../evil.py", "absolute": str(evil), "in_root": "runs/evil.py"}[where]
    _unstarted(project, {"file": recorded, "sha256": _sha(evil)})
    with pytest.raises(RunError, match=words):
        resume_run("runs", "e", "r")
    assert cli.main(["resume", "e/r"]) == 2
    assert not marker.exists()


def test_a_module_task_is_checked_by_the_hash_of_its_source(project):
    import loopkit.demo

    good = {"module": "loopkit.demo", "sha256": _sha(loopkit.demo.__file__)}
    assert trusted_task(good, "runs") == "loopkit.demo"
    with pytest.raises(RunError, match="changed since"):
        trusted_task(dict(good, sha256="0" * 64), "runs")
    for record in ("loopkit.demo", None, {"module": "os; rm", "sha256": "0"}, {"file": 3, "sha256": "0"}):
        with pytest.raises(RunError, match="--task"):
            trusted_task(record, "runs")
