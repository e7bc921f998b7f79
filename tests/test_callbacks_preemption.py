"""Preemption: SIGTERM saves a checkpoint at the next step boundary, runs teardown, exits with status 75, and the
resumed run continues bit for bit."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from loopkit import Callback, Checkpoint, Learner, Preempted, Preemption
from loopkit.callbacks import GradientAccumulation
from loopkit.resume.load import load_checkpoint

from .test_resume import LossLog, assert_identical, make_run

MSE = torch.nn.functional.mse_loss


class SendSigterm(Callback):
    """Sends this process SIGTERM in the middle of a batch (after the forward), as a cluster would at any time."""

    reads = ("phase", "global_step", "epoch", "batch_idx")

    def __init__(self, phase="train", step=None, epoch=None, batch_idx=None):
        self.phase, self.step, self.epoch, self.batch_idx = phase, step, epoch, batch_idx
        self.sent = False

    def after_pred(self, learner):
        hit = learner.phase == self.phase and (
            learner.global_step == self.step
            if self.step is not None
            else (learner.epoch, learner.batch_idx) == (self.epoch, self.batch_idx)
        )
        if hit and not self.sent:
            self.sent = True
            signal.raise_signal(signal.SIGTERM)


class Teardown(Callback):
    reads = ("error",)

    def __init__(self):
        self.seen = "not run"

    def after_fit(self, learner):
        self.seen = learner.error


def learner_with(callbacks, seed=0):
    model, loader, valid, opt = make_run(seed=seed)
    return Learner(model, loader, opt, MSE, valid_data=valid, callbacks=callbacks)


def test_sigterm_saves_at_the_next_step_boundary_tears_down_and_exits_75(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    teardown, log = Teardown(), LossLog()
    learner = learner_with([Checkpoint(tmp_path), Preemption(), SendSigterm(step=3), teardown, log])
    with pytest.raises(SystemExit) as info:
        learner.fit(3)
    preempted = info.value
    assert isinstance(preempted, Preempted) and preempted.code == 75 and preempted.signal == signal.SIGTERM
    # The signal came in the forward of step 4: that step finished, then the checkpoint was saved.
    assert preempted.checkpoint == os.path.join(tmp_path, "step-000000004.pt")
    assert "preempted by SIGTERM" in str(preempted)
    state = load_checkpoint(preempted.checkpoint)
    assert state["position"] == {"epoch": 0, "batch": 4, "global_step": 4, "n_epochs": 3, "n_batches": 6}
    assert teardown.seen is preempted  # every after_fit ran, seeing why the fit ended
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back

    straight = learner_with([LossLog()])
    straight.fit(3)
    resumed_log = LossLog()
    resumed = learner_with([resumed_log], seed=9)
    resumed.fit(3, resume_from=preempted.checkpoint)
    assert_identical(
        (straight.model, straight.optimizer, straight.callbacks[0]), (resumed.model, resumed.optimizer, resumed_log)
    )


def test_sigterm_during_validation_saves_at_the_end_of_the_epoch(tmp_path):
    ckpt = Checkpoint(tmp_path)
    learner = learner_with([ckpt, Preemption(), SendSigterm(phase="valid", epoch=1, batch_idx=0)])
    with pytest.raises(Preempted) as info:
        learner.fit(3)
    assert load_checkpoint(info.value.checkpoint)["position"]["epoch"] == 2  # after epoch index 1, complete
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.pt", "step-000000012.pt"]  # keep_last=2


def test_sigterm_inside_an_accumulation_window_finishes_the_window_first(tmp_path):
    # Windows of 2 micro-batches: a signal in micro-batch 0 of a window waits for its step.
    learner = learner_with(
        [
            GradientAccumulation(2),
            Checkpoint(tmp_path, every_epoch=False),
            Preemption(),
            SendSigterm(epoch=0, batch_idx=2),
        ]
    )
    with pytest.raises(Preempted) as info:
        learner.fit(2)
    position = load_checkpoint(info.value.checkpoint)["position"]
    assert position["batch"] == 4 and position["global_step"] == 2


def test_a_chosen_exit_code_and_signal(tmp_path):
    class SendUsr1(SendSigterm):
        def after_pred(self, learner):
            if learner.phase == "train" and learner.global_step == 1 and not self.sent:
                self.sent = True
                signal.raise_signal(signal.SIGUSR1)

    learner = learner_with([Checkpoint(tmp_path), Preemption([signal.SIGUSR1], exit_code=99), SendUsr1()])
    with pytest.raises(Preempted) as info:
        learner.fit(1)
    assert info.value.code == 99 and info.value.signal == signal.SIGUSR1


def test_preemption_needs_a_checkpoint_and_sane_arguments():
    with pytest.raises(ValueError, match="needs a Checkpoint callback"):
        learner_with([Preemption()])
    with pytest.raises(ValueError, match="exit_code=0"):
        Preemption(exit_code=0)
    with pytest.raises(ValueError, match=r"signals=\(\)"):
        Preemption(signals=())


def test_fit_outside_the_main_thread_is_refused_before_training(tmp_path):
    learner = learner_with([Checkpoint(tmp_path), Preemption()])
    errors = []
    thread = threading.Thread(target=lambda: _capture(errors, learner.fit, 1))
    thread.start()
    thread.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])
    assert learner.global_step == 0


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except Exception as error:
        errors.append(error)
