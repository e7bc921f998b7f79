"""The Learner's loop: event order, training against a hand-written loop, control flow, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import EVENTS, CancelBatch, CancelEpoch, CancelFit, CancelPhase, Learner, Step
from tests.conftest import make_regression


class Recorder:
    """Records every event it sees, with the phase, so tests can compare against the documented order."""

    reads = ("phase",)

    def __init__(self):
        self.seen = []

    def __getattr__(self, name):
        if name in EVENTS:
            return lambda learner: self.seen.append((name, learner.phase))
        raise AttributeError(name)


def test_event_sequence_matches_the_documented_loop(regression):
    model, _, opt, loss = regression
    train = [(torch.randn(2, 3), torch.randn(2, 1))] * 2
    valid = [(torch.randn(2, 3), torch.randn(2, 1))]
    rec = Recorder()
    # Recorder answers every event through __getattr__; give it the methods explicitly for validation.
    for event in EVENTS:
        setattr(rec, event, getattr(rec, event))
    Learner(model, train, opt, loss, valid_data=valid, callbacks=[rec]).fit(1)
    names = [e for e, _ in rec.seen]
    train_batch = [
        "before_batch",
        "after_pred",
        "after_loss",
        "before_backward",
        "after_backward",
        "before_step",
        "after_step",
        "after_batch",
    ]
    valid_batch = ["before_batch", "after_pred", "after_loss", "after_batch"]
    expected = (
        ["before_fit", "before_epoch", "before_train"]
        + train_batch * 2
        + ["after_train", "before_valid"]
        + valid_batch
        + ["after_valid", "after_epoch", "after_fit"]
    )
    assert names == expected
    assert {p for e, p in rec.seen if e == "after_step"} == {"train"}
    assert {p for e, p in rec.seen[-6:-2]} == {"valid"}


def test_training_matches_a_hand_written_loop_bit_for_bit():
    data, _, _ = make_regression()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    Learner(model, data, opt, torch.nn.functional.mse_loss).fit(3)
    for _ in range(3):
        for xb, yb in data:
            twin_opt.zero_grad()
            torch.nn.functional.mse_loss(twin(xb), yb).backward()
            twin_opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_validation_runs_without_gradients_in_eval_mode(regression):
    model, data, opt, loss = regression
    seen = []

    class Probe:
        reads = ("model", "loss")

        def after_loss(self, learner):
            seen.append((learner.phase, learner.model.training, learner.loss.requires_grad))

    Learner(model, data[:1], opt, loss, valid_data=data[:1], callbacks=[Probe()]).fit(1)
    assert seen == [("train", True, True), ("valid", False, False)]


def test_global_step_counts_optimizer_steps_from_zero(regression):
    model, data, opt, loss = regression
    steps = []

    class Probe:
        reads = ("global_step",)

        def before_batch(self, learner):
            if learner.phase == "train":
                steps.append(learner.global_step)

    learner = Learner(model, data, opt, loss, callbacks=[Probe()])
    learner.fit(2)
    assert steps == list(range(2 * len(data)))
    assert learner.global_step == 2 * len(data)


# ----------------------------------------------------------------------------------------------- control flow
def _counting_learner(regression, raiser, valid=True):
    model, data, opt, loss = regression
    events = []

    class Count:
        reads = ("phase",)

        def after_batch(self, learner):
            events.append(("after_batch", learner.phase, learner.epoch, learner.batch_idx))

        def after_train(self, learner):
            events.append(("after_train", learner.epoch))

        def after_valid(self, learner):
            events.append(("after_valid", learner.epoch))

        def after_epoch(self, learner):
            events.append(("after_epoch", learner.epoch))

        def after_fit(self, learner):
            events.append(("after_fit", learner.error))

    learner = Learner(model, data, opt, loss, valid_data=data if valid else None, callbacks=[raiser, Count()])
    return learner, events


def test_cancel_batch_skips_the_step_but_fires_after_batch(regression):
    class SkipSecond:
        def after_loss(self, learner):
            if learner.phase == "train" and learner.batch_idx == 1:
                raise CancelBatch

    learner, events = _counting_learner(regression, SkipSecond(), valid=False)
    learner.fit(1)
    assert [e[3] for e in events if e[0] == "after_batch"] == [0, 1, 2, 3]
    assert learner.global_step == 3  # the cancelled batch took no optimizer step


def test_cancel_phase_ends_train_and_still_validates(regression):
    class StopTrain:
        def before_batch(self, learner):
            if learner.phase == "train" and learner.batch_idx == 2:
                raise CancelPhase

    learner, events = _counting_learner(regression, StopTrain())
    learner.fit(1)
    assert [e[3] for e in events if e[:2] == ("after_batch", "train")] == [0, 1]
    assert ("after_train", 0) in events and ("after_valid", 0) in events


def test_cancel_epoch_moves_to_the_next_epoch(regression):
    class StopEpoch:
        def after_step(self, learner):
            if learner.batch_idx == 0:
                raise CancelEpoch

    learner, events = _counting_learner(regression, StopEpoch())
    learner.fit(2)
    assert [e for e in events if e[0] == "after_epoch"] == [("after_epoch", 0), ("after_epoch", 1)]
    assert not [e for e in events if e[0] == "after_valid"]  # cancelled before validation
    assert learner.global_step == 2


def test_cancel_fit_returns_normally_after_teardown(regression):
    class Stop:
        def after_step(self, learner):
            if learner.global_step == 5:
                raise CancelFit

    learner, events = _counting_learner(regression, Stop())
    assert learner.fit(10) is learner
    assert learner.global_step == 5
    # Epoch 1 was interrupted at its first batch: its after_batch/after_train/after_epoch do not fire (the
    # epoch did not complete), after_fit does. A cancel fires only the after_X of the level it cancels.
    assert events[-3:] == [("after_valid", 0), ("after_epoch", 0), ("after_fit", None)]


def test_an_error_propagates_after_after_fit_ran_with_it(regression):
    class Boom:
        def after_loss(self, learner):
            if learner.global_step == 2:
                raise RuntimeError("boom")

    learner, events = _counting_learner(regression, Boom())
    with pytest.raises(RuntimeError, match="boom"):
        learner.fit(3)
    assert events[-1][0] == "after_fit" and isinstance(events[-1][1], RuntimeError)
    assert not [e for e in events if e[0] in ("after_epoch", "after_train")]  # inner after_* are skipped
    assert learner.error is None


# ----------------------------------------------------------------------------------------------- custom step
def test_custom_step_keeps_every_event_and_trains_a_two_loss_model():
    torch.manual_seed(0)

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(3, 8)
            self.a, self.b = torch.nn.Linear(8, 1), torch.nn.Linear(8, 1)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return self.a(h), self.b(h)

    class TwoLoss(Step):
        def loss(self, learner):
            main, aux = learner.pred
            return learner.loss_fn(main, learner.yb) + 0.5 * learner.loss_fn(aux, -learner.yb)

    data, x, y = make_regression(n=128)
    model = TwoHeads()
    rec = Recorder()
    for event in EVENTS:
        setattr(rec, event, getattr(rec, event))
    learner = Learner(
        model,
        data,
        torch.optim.Adam(model.parameters(), lr=0.02),
        torch.nn.functional.mse_loss,
        step=TwoLoss(),
        callbacks=[rec],
        valid_data=data[:1],
    )
    with torch.no_grad():
        before = [torch.nn.functional.mse_loss(p, t).item() for p, t in zip(model(x), (y, -y))]
    learner.fit(30)
    with torch.no_grad():
        after = [torch.nn.functional.mse_loss(p, t).item() for p, t in zip(model(x), (y, -y))]
    assert after[0] < before[0] / 10 and after[1] < before[1] / 10
    assert {e for e, _ in rec.seen} == set(EVENTS)


def test_device_argument_moves_model_and_batches():
    data, _, _ = make_regression()
    model = torch.nn.Linear(3, 1)
    devices = []

    class Probe:
        reads = ("xb",)

        def after_pred(self, learner):
            devices.append(learner.xb.device)

    Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        device="cpu",
        callbacks=[Probe()],
    ).fit(1)
    assert devices == [torch.device("cpu")] * len(data)


# ----------------------------------------------------------------------------------------------- bad input
def test_model_must_be_a_module(regression):
    _, data, opt, loss = regression
    with pytest.raises(TypeError, match=r"torch.nn.Module.*function"):
        Learner(lambda x: x, data, opt, loss)


def test_optimizer_must_own_the_model_parameters(regression):
    model, data, _, loss = regression
    other = torch.optim.SGD(torch.nn.Linear(5, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"does not own.*\(2, 5\)"):
        Learner(model, data, other, loss)
    with pytest.raises(TypeError, match=r"torch.optim.Optimizer"):
        Learner(model, data, "sgd", loss)


def test_optimizer_may_hold_parameters_of_a_loss_module(regression):
    model, data, _, _ = regression

    class LearnedScale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, pred, target):
            return torch.nn.functional.mse_loss(pred * self.scale, target)

    loss = LearnedScale()
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.1)
    Learner(model, data, opt, loss).fit(1)
    assert loss.scale.item() != 1.0


def test_empty_data_and_non_callable_loss(regression):
    model, data, opt, loss = regression
    with pytest.raises(ValueError, match=r"train_data is empty.*\[\]"):
        Learner(model, [], opt, loss)
    with pytest.raises(ValueError, match="valid_data is empty"):
        Learner(model, data, opt, loss, valid_data=[])
    with pytest.raises(TypeError, match=r"loss_fn must be callable.*'mse'"):
        Learner(model, data, opt, "mse")
    with pytest.raises(TypeError, match="iterable of batches"):
        Learner(model, None, opt, loss)


def test_empty_iterable_without_length_fails_in_the_first_epoch(regression):
    model, _, opt, loss = regression

    class NoBatches:
        def __iter__(self):
            return iter(())

    with pytest.raises(ValueError, match="yielded no batches in epoch 0"):
        Learner(model, NoBatches(), opt, loss).fit(1)


@pytest.mark.parametrize("bad", [0, -1])
def test_fit_needs_a_positive_number_of_epochs(regression, bad):
    model, data, opt, loss = regression
    with pytest.raises(ValueError, match=f"n_epochs={bad}"):
        Learner(model, data, opt, loss).fit(bad)


@pytest.mark.parametrize("bad", [2.5, "3", True])
def test_fit_needs_an_int(regression, bad):
    model, data, opt, loss = regression
    with pytest.raises(TypeError, match="int number of epochs"):
        Learner(model, data, opt, loss).fit(bad)


def test_data_without_length_trains(regression):
    model, data, opt, loss = regression

    def stream():
        yield from data

    class Reiterable:
        def __iter__(self):
            return stream()

    learner = Learner(model, Reiterable(), opt, loss)
    assert learner.n_batches is None
    assert learner.fit(2).global_step == 2 * len(data)


# ----------------------------------------------------------------------------------------------- devices
def test_a_device_this_machine_lacks_is_named_with_the_reason(monkeypatch):
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(2, 2), torch.randn(2, 1))]

    def build(device):
        return Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
                       device=device)  # fmt: skip

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda'\): CUDA is not available on this machine: .*device='cpu'"):
        build("cuda")
    with pytest.raises(ValueError, match=r"device='tpu:0'\) is not a device torch knows"):
        build("tpu:0")
    with pytest.raises(TypeError, match=r"device=1.5"):
        build(1.5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"device='cuda:2'\): this machine has 2 CUDA device\(s\), numbered 0 to 1"):
        build("cuda:2")
    assert build("cpu").device == torch.device("cpu")


def test_a_second_fit_starts_at_its_own_beginning():
    # A checkpoint taken in the first before_epoch of a second fit must name epoch 0, batch 0 of that fit (the
    # first fit left the position at its end).
    seen = []

    class Where:
        reads = ("global_step",)

        def before_epoch(self, learner):
            seen.append((learner.position, learner.global_step))

    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 3
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
                      callbacks=[Where()])  # fmt: skip
    learner.fit(2)
    learner.fit(1)
    assert seen == [((0, 0), 0), ((1, 0), 3), ((0, 0), 0)]
