"""A run's budget (epochs, max_steps, both, valid_every), its threads, description and console log."""

from __future__ import annotations

import pathlib

import pytest
import torch

from loopkit.runs import cli
from loopkit.runs.runner import fit_budget, run_task
from loopkit.runs.sweep import Sweep
from loopkit.runs.sweep_checks import SweepError

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_steps_task.py")
EPOCHS_TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")


def test_a_task_without_epochs_trains_max_steps(tmp_path):
    run = run_task(TASK, {"max_steps": 6}, experiment="e", root=tmp_path, name="steps")
    # 4 batches an epoch: 6 steps are one whole epoch and 2 batches of the next (recorded as a second epoch).
    assert run.info["status"] == "FINISHED" and run.info["epochs_done"] == 2
    assert run.params["max_steps"] == 6 and run.params["epochs"] is None


def test_epochs_and_max_steps_stop_at_whichever_comes_first(tmp_path):
    assert run_task(TASK, {"epochs": 1, "max_steps": 100}, experiment="e", root=tmp_path).info["epochs_done"] == 1
    assert run_task(TASK, {"epochs": 9, "max_steps": 8}, experiment="e", root=tmp_path).info["epochs_done"] == 2


def test_valid_every_makes_epochs_of_a_stream(tmp_path):
    run = run_task(TASK, {"max_steps": 9, "valid_every": 3}, experiment="e", root=tmp_path)
    assert run.info["epochs_done"] == 3 and all("valid_loss" in row for row in run.metrics())


def test_no_budget_is_a_usage_error_before_any_record(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"give epochs \(--epochs=N\) or a step budget \(--max_steps=N\)"):
        fit_budget(type("P", (), {"epochs": None, "max_steps": None})())
    with pytest.raises(SystemExit) as exit:
        cli.main(["run", TASK, "--runs-root", str(tmp_path)])
    assert exit.value.code == 2 and "the run has no length" in capsys.readouterr().err
    assert not (tmp_path / "default").exists()


def test_a_sweep_sweeps_a_step_budget(tmp_path):
    s = Sweep(TASK, {"max_steps": {"multiple": [2, 5]}}, experiment="s", root=tmp_path, pruner="none")
    s.run(quiet=True)
    assert sorted(r["params"]["max_steps"] for r in s.results()) == [2, 5]
    with pytest.raises(SweepError, match="the run has no length"):
        Sweep(TASK, {"lr": {"multiple": [0.1]}}, experiment="t", root=tmp_path)


def test_threads_are_set_for_the_fit_recorded_and_restored(tmp_path, monkeypatch):
    from loopkit import Callback

    seen = []
    before = torch.get_num_threads()

    class Spy(Callback):
        def before_fit(self, learner):
            seen.append(torch.get_num_threads())

    spy = Spy()
    run = run_task(EPOCHS_TASK, {"epochs": 1}, experiment="e", root=tmp_path, callbacks=[spy])
    assert seen == [1] and run.info["threads"] == 1 and torch.get_num_threads() == before
    run = run_task(TASK, {"max_steps": 2, "threads": 2}, experiment="e", root=tmp_path, callbacks=[spy])
    assert seen[-1] == 2 and run.info["threads"] == 2
    with pytest.raises(ValueError, match="threads must be a whole number >= 1, got threads=0"):
        run_task(EPOCHS_TASK, {"epochs": 1}, experiment="e", root=tmp_path, threads=0)


def test_description_console_log_and_optimizer_are_recorded(tmp_path, capsys):
    from loopkit import Callback

    class Talk(Callback):
        def after_epoch(self, learner):
            print(f"said in epoch {learner.epoch}")

    run = run_task(
        EPOCHS_TASK,
        {"epochs": 2, "lr": 0.03},
        experiment="e",
        root=tmp_path,
        name="r",
        description="why",
        callbacks=[Talk()],
    )
    log = pathlib.Path(run.dir, "output.log").read_text()
    assert log == "said in epoch 0\nsaid in epoch 1\n" and "said in epoch 1" in capsys.readouterr().out
    assert run.info["description"] == "why"
    assert [g["lr"] for g in run.info["optimizer"]["groups"]] == [0.03] and run.info["optimizer"]["name"] == "SGD"
    assert cli.main(["show", "e/r", "--root", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "description: why" in shown and f"console output: {run.dir}/output.log" in shown
