"""Step and time budgets: fit(max_steps=..., max_time=...) trains exactly that, then validates the final model."""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import CancelStep, Learner, Metrics
from loopkit.loop import learner as learner_module


def _problem(n_batches=3):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4 * n_batches, 3, generator=g), torch.randn(4 * n_batches, 1, generator=g)
    train = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 4 * n_batches, 4)]
    valid = [(x[:4] + 1, y[:4])]
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1), train, valid


def _hand_written(model, train, n_steps, skip=()):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    taken, i = 0, 0
    while taken < n_steps:
        xb, yb = train[i % len(train)]
        if i not in skip:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()
            taken += 1
        i += 1
    return model


class Events:
    reads = ("phase", "epoch", "global_step")

    def __init__(self):
        self.seen = []

    def after_train(self, learner):
        self.seen.append(("after_train", learner.epoch, learner.global_step))

    def after_valid(self, learner):
        self.seen.append(("after_valid", learner.epoch, learner.global_step))

    def after_epoch(self, learner):
        self.seen.append(("after_epoch", learner.epoch, learner.global_step))


@pytest.mark.parametrize("n_epochs", [10, None])
def test_max_steps_trains_exactly_n_steps_then_validates_the_final_model(n_epochs):
    model, train, valid = _problem()
    twin = copy.deepcopy(model)
    events, metrics = Events(), Metrics()
    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[events, metrics],
    )
    learner.fit(n_epochs, max_steps=7)
    assert learner.global_step == 7
    _hand_written(twin, train, 7)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    # The last epoch (2) was cut after its first step, then validated and closed like any other.
    assert events.seen[-3:] == [("after_train", 2, 7), ("after_valid", 2, 7), ("after_epoch", 2, 7)]
    final = torch.nn.functional.mse_loss(twin(valid[0][0]), valid[0][1]).item()
    assert metrics.history[-1]["valid_loss"] == pytest.approx(final, rel=1e-6)  # float32 loss read in float64
    assert len(metrics.history) == 3


def test_the_epoch_count_ends_the_fit_when_it_comes_first():
    model, train, _ = _problem()
    learner = Learner(model, train, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss)
    assert learner.fit(2, max_steps=100).global_step == 6


def test_skipped_steps_do_not_count_toward_max_steps():
    model, train, _ = _problem()
    twin = copy.deepcopy(model)

    class SkipBatch1:
        reads = ("epoch", "batch_idx")

        def before_step(self, learner):
            if learner.epoch == 0 and learner.batch_idx == 1:
                raise CancelStep

    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        callbacks=[SkipBatch1()],
    )
    learner.fit(max_steps=4)
    assert learner.global_step == 4 and learner.skipped_steps == 1
    _hand_written(twin, train, 4, skip={1})
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_max_time_ends_at_the_batch_that_crosses_it(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(learner_module.time, "monotonic", lambda: clock[0])

    class Tick:
        reads = ("phase",)

        def after_batch(self, learner):
            clock[0] += learner.phase == "train"  # every train batch takes one second

    model, train, valid = _problem()
    events = Events()
    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[Tick(), events],
    )
    learner.fit(10, max_time=4.5)
    assert learner.global_step == 5  # the fifth batch ends at 5 s, past 4.5 s
    assert events.seen[-3:] == [("after_train", 1, 5), ("after_valid", 1, 5), ("after_epoch", 1, 5)]


def test_endless_data_with_a_step_budget():
    model, train, _ = _problem()

    class Stream:  # an iterable without a length, like an IterableDataset's loader
        def __iter__(self):
            while True:
                yield from train

    learner = Learner(model, Stream(), torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss)
    assert learner.fit(max_steps=50).global_step == 50


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "needs n_epochs, max_steps or both"),
        ({"max_steps": 0}, ValueError, "max_steps=0"),
        ({"max_steps": 2.0}, TypeError, "max_steps=2.0"),
        ({"n_epochs": 2, "max_time": 0}, ValueError, "max_time=0"),
        ({"n_epochs": 2, "max_time": float("nan")}, ValueError, "max_time=nan"),
        ({"n_epochs": 2, "max_time": "1h"}, ValueError, "max_time='1h'"),
    ],
)
def test_bad_budgets_fail_before_training(kwargs, error, match):
    model, train, _ = _problem()
    learner = Learner(model, train, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=match):
        learner.fit(**kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


class _Stream(torch.utils.data.IterableDataset):
    """An endless stream without a length, as large runs train on."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


def test_validation_every_n_batches_of_an_endless_stream():
    model, train, valid = _problem(n_batches=3)
    twin = copy.deepcopy(model)
    events, metrics = Events(), Metrics()
    stop = []

    class StopAtSecondValidation:
        reads = ("epoch",)
        run_after = ("Metrics",)

        def after_epoch(self, learner):
            stop.append(learner.epoch)

    learner = Learner(
        model,
        _Stream(train),
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[events, metrics, StopAtSecondValidation()],
    )
    learner.fit(max_steps=10, valid_every=4)
    # 10 steps in "epochs" of 4 batches: validation after 4, 8 and the final 10.
    assert learner.global_step == 10
    assert [e[1:] for e in events.seen if e[0] == "after_valid"] == [(0, 4), (1, 8), (2, 10)]
    assert len(metrics.history) == 3 and stop == [0, 1, 2]
    _hand_written(twin, train, 10)  # the stream continued across the loop's epochs: batches 0,1,2,0,1,2,...
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    final = torch.nn.functional.mse_loss(twin(valid[0][0]), valid[0][1]).item()
    assert metrics.history[-1]["valid_loss"] == pytest.approx(final, rel=1e-6)


def test_validation_every_n_batches_of_a_long_epoch_with_a_length():
    model, train, valid = _problem(n_batches=5)
    twin = copy.deepcopy(model)
    events = Events()
    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[events],
    )
    learner.fit(3, valid_every=2)  # three loop epochs of 2 batches: the data's 5 batches, then a new pass
    assert learner.global_step == 6 and learner.n_batches == 2
    _hand_written(twin, train, 6)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="valid_every=0"):
        learner.fit(3, valid_every=0)
