"""Small frictions of issue 24, each what a user would expect."""

from __future__ import annotations

import pytest
import torch

from loopkit import Checkpoint, Learner, LearningRate, Schedule, Scheduler
from loopkit.param_groups import FreezeUntil
from loopkit.runs.space import SpaceError, dimension


def test_a_linear_dimension_without_count_says_what_it_takes():
    with pytest.raises(SpaceError, match=r"'width': linear takes start, end, count; got \{'start': 1, 'end': 4\}"):
        dimension("width", {"linear": {"start": 1, "end": 4}})


def test_scheduler_per_batch_is_per_step():
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 3
    by_batch = Scheduler({LearningRate: Schedule([0, 1], [0.1, 0.0], unit="fraction")}, per="batch")
    assert by_batch.per == "step"
    Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss, callbacks=[by_batch]
    ).fit(1)
    assert by_batch.history["lr"] == pytest.approx([0.1, 0.1 * 2 / 3, 0.1 / 3], rel=1e-12)  # linear, steps from 0
    with pytest.raises(ValueError, match=r"use 'step' \(or 'batch', the same\) or 'epoch'"):
        Scheduler({LearningRate: Schedule([0, 1], [0.1, 0.0], unit="fraction")}, per="batches")


def test_freeze_until_past_the_fit_warns():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    data = [(torch.randn(4, 2), torch.randn(4, 1))]
    learner = Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        callbacks=[FreezeUntil([model[0]], epoch=5)],
    )
    with pytest.warns(UserWarning, match=r"FreezeUntil\(epoch=5\) in a fit of n_epochs=2"):
        learner.fit(2)


def test_checkpoint_latest_of_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        Checkpoint.latest(tmp_path / "typo")
    assert Checkpoint.latest(tmp_path) is None  # a directory without checkpoints yet


def test_the_advice_for_resuming_a_finished_fit_works(tmp_path):
    def learner():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        scheduler = Scheduler({LearningRate: Schedule([0, 1], [0.1, 0.0], unit="fraction")}, on_mismatch="stretch")
        data = [(torch.randn(4, 2), torch.randn(4, 1))] * 2
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[scheduler, Checkpoint(tmp_path)])

    learner().fit(2)
    with pytest.raises(Exception, match=r"pass a larger n_epochs, and give every Scheduler on_mismatch='stretch'"):
        learner().fit(2, resume_from=Checkpoint.latest(tmp_path))
    longer = learner()
    longer.fit(4, resume_from=Checkpoint.latest(tmp_path))  # what the advice says: it trains on
    assert longer.global_step == 8


def test_list_without_an_experiment_lists_the_experiments(tmp_path, capsys):
    from loopkit.runs import cli
    from loopkit.runs.record import Run

    Run.create(tmp_path, "a", {}, name="one")
    Run.create(tmp_path, "a", {}, name="two")
    Run.create(tmp_path, "b", {}, name="one")
    assert cli.main(["list", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[2:]] == [["a", "2"], ["b", "1"]]
    assert cli.main(["list", "--root", str(tmp_path / "nope")]) == 2
