"""Names are one path component and nothing outside --root is read or written: the probes of issue 23, point 1."""

from __future__ import annotations

import os
import pathlib

import pytest

from loopkit.runs import cli
from loopkit.runs.paths import MAX_NAME, PathError, check_name, inside
from loopkit.runs.record import Run, list_runs
from loopkit.runs.runner import resume_run, run_task
from loopkit.runs.sweep_checks import SweepError
from loopkit.runs.sweep_cli import sweep_main
from loopkit.runs.sweep_config import from_config

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")
BAD_NAMES = ["", ".", "..", "../x", "a/b", "/abs", "a\x00b", "a\\b", ".hidden", "x" * (MAX_NAME + 1), "a b", 5]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_one_plain_component_is_refused_wherever_it_enters(tmp_path, name):
    with pytest.raises(PathError, match="name"):
        check_name("run", name)
    with pytest.raises(PathError):
        Run.create(tmp_path, "exp", {}, name=name)
    with pytest.raises(PathError):
        Run.create(tmp_path, name, {}, name="r")
    with pytest.raises(PathError):
        Run.load(tmp_path, "exp", name)
    with pytest.raises(PathError):
        list_runs(tmp_path, name)
    assert os.listdir(tmp_path) in ([], ["exp"]) and not list((tmp_path / "exp").glob("*"))


def test_good_names_pass_unchanged():
    for name in ("a", "lr-0.01_seed1", "20261130-104300-3fa2", "x" * MAX_NAME, "a..b"):
        assert check_name("run", name) == name


def test_show_of_a_record_beside_the_root_is_refused(tmp_path, capsys):
    Run.create(tmp_path, "outside", {"secret": 1}, name="stolen")  # tmp/outside/stolen, beside tmp/root
    (tmp_path / "root").mkdir()
    root = str(tmp_path / "root")
    assert cli.main(["show", "../outside/stolen", "--root", root]) == 2
    out = capsys.readouterr()
    assert "experiment name '..'" in out.err and "secret" not in out.out
    assert cli.main(["resume", "../outside/stolen", "--root", root]) == 2
    assert cli.main(["list", "..", "--root", root]) == 2
    assert Run.load(tmp_path, "outside", "stolen").info["status"] == "CREATED"  # untouched


def test_a_symlinked_experiment_that_leaves_the_root_is_not_followed(tmp_path, capsys):
    Run.create(tmp_path, "outside", {"secret": 1}, name="stolen")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "root" / "exp")
    root = str(tmp_path / "root")
    for argv in (["show", "exp/stolen"], ["list", "exp"], ["resume", "exp/stolen"]):
        assert cli.main([*argv, "--root", root]) == 2
        assert "outside the run root" in capsys.readouterr().err
    with pytest.raises(PathError, match="outside the run root"):
        Run.create(root, "exp", {}, name="new")
    assert sorted(os.listdir(tmp_path / "outside")) == ["stolen"]


def test_inside_resolves_links_and_keeps_what_the_user_typed(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    os.symlink(tmp_path / "root" / "a", tmp_path / "root" / "b")  # a link that stays inside is fine
    assert inside(tmp_path / "root", "b", "c") == str(tmp_path / "root" / "b" / "c")
    with pytest.raises(PathError):
        inside(tmp_path / "root", "..", "x")


def test_a_symlinked_checkpoints_directory_is_refused_and_nothing_is_written_there(tmp_path):
    run = Run.create(tmp_path / "root", "exp", {"epochs": 2}, name="r", task=None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.pt").write_bytes(b"user data")
    os.symlink(elsewhere, pathlib.Path(run.dir) / "checkpoints")
    with pytest.raises(PathError, match="outside the run root"):
        run_task(TASK, {"epochs": 2}, experiment="exp", root=tmp_path / "root", run=run)
    with pytest.raises(PathError, match="outside the run root"):
        resume_run(tmp_path / "root", "exp", "r", task=TASK)
    assert os.listdir(elsewhere) == ["precious.pt"] and (elsewhere / "precious.pt").read_bytes() == b"user data"


@pytest.mark.parametrize("experiment", ["../../escaped", "/tmp/loopkit-escaped-absolute", "", 5, "a/b"])
def test_a_sweep_file_cannot_put_its_storage_outside_the_root(tmp_path, monkeypatch, capsys, experiment):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "sweep.yaml"
    import yaml

    spec.write_text(yaml.safe_dump({"task": TASK, "experiment": experiment, "parameters": {"lr": {"single": 0.1}}}))
    with pytest.raises(SweepError, match="experiment name"):
        from_config(yaml.safe_load(spec.read_text()), root=str(tmp_path / "root"))
    assert sweep_main([str(spec), "--root", str(tmp_path / "root"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "experiment name" in err and str(spec) in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["sweep.yaml"]  # no root, no escaped directory, no storage
    assert not os.path.exists("/tmp/loopkit-escaped-absolute")


def test_a_storage_file_named_by_the_sweep_file_must_be_inside_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"task": TASK, "experiment": "e", "parameters": {"lr": {"single": 0.1}}, "storage": "../elsewhere.db"}
    with pytest.raises(SweepError, match="outside the run root"):
        from_config(config, root="root")
    assert not (tmp_path.parent / "elsewhere.db").exists()
