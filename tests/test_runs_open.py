"""The model out of a run: open_run by name or directory, its best or last model, verified before loading."""

from __future__ import annotations

import copy
import pathlib

import pytest
import torch

import loopkit
from loopkit import Callback, CheckpointError
from loopkit.runs import load_model, open_run
from loopkit.runs.record import Run
from loopkit.runs.runner import run_task
from loopkit.runs.task import load_task

TASK = str(pathlib.Path(__file__).resolve().parent / "runs_task.py")


class Snapshots(Callback):
    """The reference: the model's weights after every epoch, copied while it trains."""

    reads = ("model", "epoch")

    def __init__(self):
        self.weights = []

    def after_epoch(self, learner):
        self.weights.append(copy.deepcopy(learner.model.state_dict()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    snaps = Snapshots()
    # lr 0.3 on this regression overshoots after a few epochs, so the best epoch is not the last one.
    run = run_task(TASK, {"epochs": 3, "lr": 0.3}, experiment="e", root=root, name="r", callbacks=[snaps])
    return root, run, snaps.weights


def equal(model, weights):
    return all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)


def test_open_run_by_name_or_directory_reads_the_record(trained):
    root, run, _ = trained
    for opened in (open_run("e", "r", root=root), open_run(run.dir)):
        assert opened.params == run.params and opened.status == "FINISHED"
        assert opened.metrics() == Run.load(root, "e", "r").metrics()
    with pytest.raises(FileNotFoundError, match="runs there: r"):
        open_run("e", "nope", root=root)


def test_best_and_last_models_are_the_weights_of_those_epochs(trained):
    root, _, weights = trained
    opened = open_run("e", "r", root=root)
    losses = [row["valid_loss"] for row in opened.metrics()]
    best_epoch = losses.index(min(losses))
    assert best_epoch != len(losses) - 1  # so best and last are different weights
    task = load_task(TASK)
    best, last = opened.model(task, which="best"), opened.model(task, which="last")
    assert equal(best, weights[best_epoch]) and equal(last, weights[-1])
    assert not best.training and not last.training
    x = torch.randn(5, 3)
    assert torch.equal(best(x), best(x))  # eval mode: deterministic inference
    # A function of the parameters builds the model just as well.
    same = opened.model(lambda p: torch.nn.Sequential(torch.nn.Linear(3, p["width"]), torch.nn.Linear(p["width"], 1)))
    assert equal(same, weights[best_epoch])
    with pytest.raises(ValueError, match="which='first'"):
        opened.model(task, which="first")


def test_a_bare_checkpoint_file_loads_through_the_public_reader(trained):
    root, _, weights = trained
    path = open_run("e", "r", root=root).checkpoint_path("last")
    state = loopkit.load_checkpoint(path)
    assert all(torch.equal(state["model"][k], weights[-1][k]) for k in weights[-1])
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    assert equal(load_model(model, path), weights[-1]) and not model.training


def test_damaged_or_unfitting_checkpoints_leave_the_model_untouched(trained, tmp_path):
    root, _, _ = trained
    path = pathlib.Path(open_run("e", "r", root=root).checkpoint_path("last"))
    damaged = tmp_path / "damaged.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(model, damaged)
    wide = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Linear(6, 1))
    wide_before = copy.deepcopy(wide.state_dict())
    with pytest.raises(CheckpointError, match=r"0.weight: \(4, 3\) in the file, \(6, 3\) in the model"):
        load_model(wide, path)
    assert equal(model, before) and equal(wide, wide_before) and model.training
    built = []
    opened = open_run("e", "r", root=root)
    (pathlib.Path(opened.dir) / "checkpoints" / "best.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        opened.model(lambda p: built.append(p), which="best")
    assert built == []  # verified before any model was built
