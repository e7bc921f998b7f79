"""Resuming from Learner.state_dict() continues exactly as if the run had never stopped.

These tests take the state in memory, at chosen points, from a callback; the Checkpoint callback's tests
(tests/test_callbacks_checkpoint.py) do the same through files and killed processes.
"""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import Callback, Learner


def make_run(seed=0, num_workers=0):
    """A model with dropout, a shuffling DataLoader with an uneven last batch, SGD with momentum."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(90, 5, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2]).sin()
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=16, shuffle=True, num_workers=num_workers, timeout=60 if num_workers else 0
    )  # a stuck worker fails the test after 60 s instead of hanging
    valid = torch.utils.data.DataLoader(dataset, batch_size=45)
    model = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, loader, valid, optimizer


class Snapshot(Callback):
    """Takes learner.state_dict() after train batch `at` (global step) or at the end of epoch `at_epoch`."""

    reads = ("global_step", "epoch")

    def __init__(self, at_step=None, at_epoch=None):
        self.at_step, self.at_epoch, self.state = at_step, at_epoch, None

    def after_batch(self, learner):
        if learner.phase == "train" and learner.global_step == self.at_step:
            self.state = copy.deepcopy(learner.state_dict())

    def after_epoch(self, learner):
        if learner.epoch == self.at_epoch:
            self.state = copy.deepcopy(learner.state_dict())


class LossLog(Callback):
    """Logs every loss (train and valid); its history must also continue exactly."""

    reads = ("loss", "phase")

    def __init__(self):
        self.losses = []

    def after_loss(self, learner):
        self.losses.append((learner.phase, learner.loss.detach().clone()))

    def state_dict(self):
        return {"losses": list(self.losses)}

    def load_state_dict(self, state):
        self.losses = list(state["losses"])


def run_straight(n_epochs, **snapshot):
    model, loader, valid, opt = make_run()
    snap, log = Snapshot(**snapshot), LossLog()
    Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[snap, log]).fit(n_epochs)
    return model, opt, log, snap.state


def run_resumed(n_epochs, state):
    # A fresh process would start from different RNG states: scramble them to prove the checkpoint restores them.
    model, loader, valid, opt = make_run(seed=999)
    torch.manual_seed(4242)
    log = LossLog()
    Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[Snapshot(), log]).fit(
        n_epochs, resume_from=state
    )
    return model, opt, log


def assert_identical(a, b):
    model_a, opt_a, log_a = a[:3]
    model_b, opt_b, log_b = b[:3]
    for p, q in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(p, q)
    for s, t in zip(opt_a.state.values(), opt_b.state.values()):
        assert torch.equal(s["momentum_buffer"], t["momentum_buffer"])
    assert len(log_a.losses) == len(log_b.losses)
    for (pa, la), (pb, lb) in zip(log_a.losses, log_b.losses):
        assert pa == pb and torch.equal(la, lb)


@pytest.mark.parametrize("snapshot", [{"at_step": 3}, {"at_step": 6}, {"at_step": 13}, {"at_epoch": 0}, {"at_step": 1}])
def test_resume_from_mid_epoch_or_epoch_end_is_bit_identical(snapshot):
    # 90 samples / 16 = 6 batches per epoch (last one of 10): step 6 is the end of epoch 0's train phase.
    straight = run_straight(3, **snapshot)
    assert straight[3] is not None
    resumed = run_resumed(3, straight[3])
    assert_identical(straight, resumed)


def test_resume_with_dataloader_workers_is_bit_identical():
    model, loader, valid, opt = make_run(num_workers=2)
    snap, log = Snapshot(at_step=8), LossLog()
    Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[snap, log]).fit(2)
    model2, loader2, valid2, opt2 = make_run(seed=5, num_workers=2)
    log2 = LossLog()
    Learner(model2, loader2, opt2, torch.nn.functional.mse_loss, valid_data=valid2, callbacks=[Snapshot(), log2]).fit(
        2, resume_from=snap.state
    )
    assert_identical((model, opt, log), (model2, opt2, log2))


def test_a_different_seed_really_changes_the_run():
    """Guards the tests above: if RNG did not matter, resuming would be trivially identical."""
    a = run_straight(1)
    model, loader, _valid, opt = make_run(seed=1)
    Learner(model, loader, opt, torch.nn.functional.mse_loss).fit(1)
    assert not torch.equal(a[0][0].weight, model[0].weight)


def test_state_dict_is_refused_during_validation():
    model, loader, valid, opt = make_run()

    class TakeInValid(Callback):
        def after_batch(self, learner):
            if learner.phase == "valid":
                learner.state_dict()

    with pytest.raises(RuntimeError, match="not during validation"):
        Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[TakeInValid()]).fit(1)


def test_resume_checks_the_checkpoint_and_the_epoch_count():
    straight = run_straight(2, at_epoch=1)
    model, loader, _valid, opt = make_run()
    learner = Learner(model, loader, opt, torch.nn.functional.mse_loss)
    with pytest.raises(ValueError, match="after 2 complete epochs, past the end of this fit of n_epochs=1"):
        learner.fit(1, resume_from=straight[3])
    with pytest.raises(ValueError, match="not a loopkit-checkpoint-2 state"):
        learner.fit(1, resume_from={"model": {}})
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at 'nope.pt'"):
        learner.fit(1, resume_from="nope.pt")


def test_resume_from_a_directory_names_the_file_to_pass(tmp_path):
    model, loader, _valid, opt = make_run()
    learner = Learner(model, loader, opt, torch.nn.functional.mse_loss)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FileNotFoundError, match=r"it is a directory; pass the path of a checkpoint file in it.*latest"):
        learner.fit(1, resume_from=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing touched
