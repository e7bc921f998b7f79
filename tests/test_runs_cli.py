"""The runs command behaves like the tools users know: help, no prefix matching, quiet broken pipes, one
--root flag, documented exit statuses (issue 23, point 8)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from loopkit.runs import cli
from loopkit.runs.record import Run
from loopkit.runs.signals import EXIT_PREEMPTED
from loopkit.runs.sweep_cli import sweep_main

HERE = pathlib.Path(__file__).resolve().parent
TASK = str(HERE / "runs_task.py")


def test_run_help_prints_help(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", TASK, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--lr FLOAT" in out and "--root" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["run", TASK, "--l=0.01"],  # a prefix of --lr
        ["run", TASK, "--epoch=2"],  # a prefix of --epochs
        ["run", TASK, "--experi=x"],
        ["list", "e", "--roo", "x"],
        ["show", "e/r", "--stale", "5"],
    ],
)
def test_flags_are_not_prefix_matched(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_the_sweep_command_does_not_prefix_match_either(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sweep_main([str(tmp_path / "s.yaml"), "--dry"])
    assert stop.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_root_is_the_one_name_and_runs_root_still_works(tmp_path, monkeypatch):
    monkeypatch.chdir(HERE.parent)
    assert cli.main(["run", TASK, "--epochs=1", "--root", str(tmp_path), "--experiment=e", "--run-name=a"]) == 0
    assert cli.main(["run", TASK, "--epochs=1", "--runs-root", str(tmp_path), "--experiment=e", "--run-name=b"]) == 0
    assert sorted(os.listdir(tmp_path / "e")) == ["a", "b"]


@pytest.mark.parametrize("stale", ["0", "-1", "nan", "inf", "x"])
def test_stale_after_must_be_positive_seconds(stale, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["show", "e/r", "--stale-after", stale])
    assert stop.value.code == 2 and "--stale-after" in capsys.readouterr().err


def test_list_into_a_closed_pipe_ends_quietly(tmp_path):
    # Enough runs that the table overflows the pipe buffer (64 KiB) after the reader has gone.
    template = Run.create(tmp_path, "e", {"p": "x" * 60}, name="r0000")
    for i in range(1, 700):
        directory = tmp_path / "e" / f"r{i:04d}"
        directory.mkdir()
        run = Run(str(directory), dict(template.info, name=f"r{i:04d}"))
        run.save()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopkit.runs", "list", "e", "--root", str(tmp_path)],
        cwd=HERE.parent,
        env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(120, proc.kill)  # a child that hangs before its first line fails the test
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"run")
        proc.stdout.close()  # as `head -1` does
        _, err = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
    assert b"BrokenPipeError" not in err and b"Traceback" not in err and proc.returncode == 1, err


def test_exit_statuses_are_the_documented_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(HERE.parent)
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, EXIT_PREEMPTED) == (0, 1, 2, 75)
    assert cli.main(["show", "e/missing", "--root", str(tmp_path)]) == cli.EXIT_USAGE
    Run.create(tmp_path, "e", {}, name="r")
    path = tmp_path / "e" / "r" / "run.json"
    path.write_text(json.dumps({"broken": True}))
    assert cli.main(["show", "e/r", "--root", str(tmp_path)]) == cli.EXIT_FAILED == 1
    docs = (HERE.parent / "docs" / "runs.md").read_text()
    for status in ("0", "1", "2", "75"):
        assert f"| {status} " in docs  # the table of exit statuses
