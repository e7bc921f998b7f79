"""The loop primitive: every handler of an event runs; cancels take effect after; errors win; teardown.

The reference for each cancel is a hand-written loop that applies exactly the optimizer steps the documented
rule leaves (docs/events.md), compared weight for weight, plus the validation phases the rule says run.
"""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import (
    EVENTS,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    CancelPhase,
    CancelStep,
    Checkpoint,
    EarlyStopping,
    Learner,
    Metrics,
)

N_EPOCHS, N_TRAIN = 2, 3
BATCH_EVENTS = (
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
)
PRE_STEP = BATCH_EVENTS[:6]
CANCELS = (CancelStep, CancelBatch, CancelPhase, CancelEpoch, CancelFit)


def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4 * N_TRAIN, 3, generator=g), torch.randn(4 * N_TRAIN, 1, generator=g)
    train = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 4 * N_TRAIN, 4)]
    valid = [(x[:4], y[:4])]
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1), train, valid


class Raise:
    """Raises ``cancel`` once, at ``event`` of epoch 0 (batch 1 of the train phase, or the valid batch)."""

    def __init__(self, event, cancel, phase="train"):
        self.cancel, self.done = cancel, False
        self.where = phase if event in BATCH_EVENTS or event.endswith("_valid") else None
        setattr(self, event, self._maybe)

    def _maybe(self, learner):
        at_batch = self.where != "train" or learner.batch_idx == 1
        if not self.done and learner.epoch == 0 and self.where in (learner.phase, None) and at_batch:
            self.done = True
            raise self.cancel


class Record:
    """Runs after Raise at every event; records what it sees."""

    reads = ("phase",)
    run_after = ("Raise",)

    def __init__(self):
        self.seen = []
        for event in EVENTS:
            setattr(self, event, lambda learner, event=event: self.seen.append((event, learner.epoch, learner.phase)))


def _expected(event, cancel, phase="train"):
    """(steps applied, epochs validated, error type or None) by the documented rule, worked by hand."""
    all_steps = [(e, b) for e in range(N_EPOCHS) for b in range(N_TRAIN)]
    all_valid = list(range(N_EPOCHS))
    later = [(1, b) for b in range(N_TRAIN)]
    if phase == "valid":  # raised in epoch 0's validation: training of epoch 0 is complete
        phase_event = event in ("before_valid", "after_valid")
        if cancel in (CancelStep, CancelBatch):
            return ([], [], RuntimeError) if phase_event else (all_steps, all_valid, None)
        if cancel is CancelPhase:
            return all_steps, all_valid, None
        if cancel is CancelEpoch:  # after_valid of epoch 0 fires only if it was running when raised
            return all_steps, (all_valid if event == "after_valid" else [1]), None
        return [(0, b) for b in range(N_TRAIN)], ([0] if event == "after_valid" else []), None
    if event in ("before_fit", "after_fit"):
        if event == "after_fit" or cancel is CancelFit:
            return ([], [], None) if event == "before_fit" else (all_steps, all_valid, None)
        return [], [], RuntimeError
    if event in ("before_epoch", "after_epoch"):
        if cancel in (CancelStep, CancelBatch, CancelPhase):
            return [], [], RuntimeError
        if event == "before_epoch":
            return ([], [], None) if cancel is CancelFit else (later, [1], None)
        return ([(0, b) for b in range(N_TRAIN)], [0], None) if cancel is CancelFit else (all_steps, all_valid, None)
    if event in ("before_train", "after_train"):
        if cancel in (CancelStep, CancelBatch):
            return [], [], RuntimeError
        done = [] if event == "before_train" else [(0, b) for b in range(N_TRAIN)]
        if cancel is CancelPhase:
            return done + later, all_valid, None
        if cancel is CancelEpoch:
            return done + later, [1], None
        return done, [], None
    # an event of train batch 1 of epoch 0
    step_done = event in ("after_step", "after_batch")
    done = [(0, 0), (0, 1)] if step_done else [(0, 0)]
    if cancel in (CancelStep, CancelBatch):
        if event == "after_step" and cancel is CancelStep:
            return [], [], RuntimeError
        return (all_steps if step_done else [s for s in all_steps if s != (0, 1)]), all_valid, None
    if cancel is CancelPhase:
        return done + later, all_valid, None
    if cancel is CancelEpoch:
        return done + later, [1], None
    return done, [], None


def _hand_written(model, train, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _, b in steps:
        xb, yb = train[b]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    return model


TRAIN_CASES = [
    (event, cancel, "train") for event in EVENTS for cancel in CANCELS if event not in ("before_valid", "after_valid")
]
VALID_CASES = [
    (event, cancel, "valid")
    for event in ("before_valid", "before_batch", "after_pred", "after_loss", "after_batch", "after_valid")
    for cancel in CANCELS
]


@pytest.mark.parametrize(
    ("event", "cancel", "phase"),
    TRAIN_CASES + VALID_CASES,
    ids=[f"{c.__name__}-{e}-{p}" for e, c, p in TRAIN_CASES + VALID_CASES],
)
def test_every_cancel_from_every_event(event, cancel, phase):
    model, train, valid = _problem()
    twin = copy.deepcopy(model)
    record = Record()
    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=valid,
        callbacks=[Raise(event, cancel, phase), record],
    )
    steps, validated, error = _expected(event, cancel, phase)
    if error is not None:
        with pytest.raises(error, match=f"{cancel.__name__} was raised in {event}"):
            learner.fit(N_EPOCHS)
        assert record.seen[-1][0] == "after_fit"
        return
    learner.fit(N_EPOCHS)
    # The raising handler's event still reached the next callback: every handler of an event runs.
    assert any(e == event for e, _, _ in record.seen)
    assert learner.global_step == len(steps)
    for a, b in zip(model.parameters(), _hand_written(twin, train, steps).parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sorted({ep for e, ep, _ in record.seen if e == "after_valid"}) == validated
    assert record.seen[-1][0] == "after_fit"
    assert learner.skipped_steps == (1 if cancel is CancelStep and event in PRE_STEP and phase == "train" else 0)
    assert all(p.grad is None for p in model.parameters())  # zeroed after the last step: nothing left over


def test_a_cancel_takes_effect_after_the_events_other_handlers():
    model, train, _ = _problem()
    order = []

    class StopFit:
        def after_epoch(self, learner):
            order.append("stop")
            raise CancelFit

    class Save:
        run_after = ("StopFit",)

        def after_epoch(self, learner):
            order.append("save")

        def before_epoch(self, learner):
            order.append("epoch")

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[StopFit(), Save()]).fit(5)
    assert order == ["epoch", "stop", "save"]


def test_the_outermost_cancel_wins_and_errors_win_over_cancels():
    model, train, _ = _problem()

    class A:
        def after_step(self, learner):
            raise CancelBatch

    class B:
        run_after = ("A",)

        def after_step(self, learner):
            raise CancelFit

    class C:
        run_after = ("B",)

        def after_step(self, learner):
            raise ValueError("disk full")

    class D:
        run_after = ("C",)

        def after_step(self, learner):
            raise OSError("second")

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[A(), B()])
    assert learner.fit(3).global_step == 1  # CancelFit beat CancelBatch
    learner = Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[A(), B(), C(), D()])
    with pytest.raises(ValueError, match="disk full") as info:
        learner.fit(3)
    notes = info.value.__notes__
    assert len(notes) == 3
    assert "after_step by A: loopkit.loop.events.CancelBatch" in notes[0]
    assert "after_step by B" in notes[1] and "CancelFit" in notes[1]
    assert "after_step by D: OSError: second" in notes[2]


def test_early_stopping_and_checkpoint_in_after_epoch_both_run(tmp_path):
    """EarlyStopping's CancelFit no longer keeps Checkpoint (or a logger) from seeing the final epoch."""
    model, train, valid = _problem()
    stop = EarlyStopping("valid_loss", patience=0, mode="max")  # stops at the second epoch
    ckpt = Checkpoint(tmp_path, keep_last=10)
    seen = []

    class Logger:
        run_after = ("EarlyStopping",)
        reads = ("epoch",)

        def after_epoch(self, learner):
            seen.append(learner.epoch)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = Learner(
        model, train, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[Metrics(), stop, ckpt, Logger()]
    )
    learner.fit(10)
    assert stop.stopped_epoch == 1
    assert seen == [0, 1]
    assert [p.rsplit("/", 1)[-1] for p in ckpt.saved] == ["epoch-0001.pt", "epoch-0002.pt"]


# ------------------------------------------------------------------------------------------------ teardown
def test_teardown_survives_errors_in_teardown():
    """Issue 12 section 5: every after_fit runs, the training error propagates, teardown errors attached."""
    model, train, _ = _problem()
    closed = []

    class Boom:
        def after_loss(self, learner):
            if learner.global_step == 2:
                raise KeyError("training failed")

    class BadTeardown:
        run_after = ("Boom",)

        def after_fit(self, learner):
            raise OSError("cannot flush")

    class Writer:
        run_after = ("BadTeardown",)
        reads = ("error",)

        def after_fit(self, learner):
            closed.append(type(learner.error))

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[Boom(), BadTeardown(), Writer()])
    with pytest.raises(KeyError, match="training failed") as info:
        learner.fit(2)
    assert closed == [KeyError]  # the later after_fit ran, and saw the training error
    assert learner.error is None
    (note,) = info.value.__notes__
    assert "after_fit of BadTeardown raised OSError: cannot flush" in note

    # Without a training error, the teardown error itself propagates (after every after_fit ran).
    learner = Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[BadTeardown(), Writer()])
    with pytest.raises(OSError, match="cannot flush"):
        learner.fit(1)
    assert closed == [KeyError, type(None)]
    assert learner.error is None


def test_cancels_in_after_fit_are_ignored():
    model, train, _ = _problem()

    class Late:
        def after_fit(self, learner):
            raise CancelFit

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert Learner(model, train, opt, torch.nn.functional.mse_loss, callbacks=[Late()]).fit(1).global_step == 3


def test_many_skipped_steps_in_a_row_is_an_error():
    model, train, _ = _problem()

    class AlwaysSkip:
        def before_step(self, learner):
            raise CancelStep

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = Learner(model, train * 40, opt, torch.nn.functional.mse_loss, callbacks=[AlwaysSkip()])
    with pytest.raises(RuntimeError, match="100 optimizer steps in a row were skipped"):
        learner.fit(1)
    assert learner.skipped_steps == 100 and learner.global_step == 0

    class SkipSome:
        reads = ("batch_idx",)

        def before_step(self, learner):
            if learner.batch_idx % 100:
                raise CancelStep

    learner = Learner(model, train * 100, opt, torch.nn.functional.mse_loss, callbacks=[SkipSome()])
    learner.fit(1)  # 99 in a row, then a step: no error
    assert learner.global_step == 3 and learner.skipped_steps == 297


# ------------------------------------------------------------------------------------------------ modes
def test_a_callback_owns_the_model_modes_from_before_train():
    """Issue 11 section 6: model.train() runs before before_train, so a frozen BatchNorm put in eval stays so."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    norm = model[1]
    before = norm.running_mean.clone()

    class FreezeNorm:
        writes = ("model.modes",)

        def before_train(self, learner):
            norm.eval()

    _, train, valid = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Learner(model, train, opt, torch.nn.functional.mse_loss, valid_data=valid, callbacks=[FreezeNorm()]).fit(2)
    assert torch.equal(norm.running_mean, before)
    assert not model.training  # validation left everything in eval

    model.train()
    Learner(model, train, opt, torch.nn.functional.mse_loss).fit(1)
    assert not torch.equal(norm.running_mean, before)  # without the callback the statistics move
