"""EarlyStopping and NaNGuard: when training stops, what is reported, and what is left behind."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from loopkit import Checkpoint, EarlyStopping, Learner, Metrics, NaNGuard


class Scripted:
    """Overrides the valid loss the Metrics callback reports, epoch by epoch, to script improvements."""

    reads = ("epoch",)
    run_after = ("Metrics",)
    run_before = ("EarlyStopping",)

    def __init__(self, values):
        self.values = values

    def after_epoch(self, learner):
        metrics = learner.callback(Metrics)
        metrics.history[-1]["valid_loss"] = self.values[learner.epoch]


def learner_with(callbacks, n_batches=3, lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(n_batches)]
    return Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=lr),
        torch.nn.functional.mse_loss,
        valid_data=data[:1],
        callbacks=callbacks,
    )


@pytest.mark.parametrize(
    "values, patience, min_delta, stopped",
    [
        ([5, 4, 4.5, 4.2, 4.1, 3.0, 2.0], 3, 0.0, 4),  # 3 epochs without beating 4 -> stop after epoch 4
        ([5, 4, 4.5, 4.2, 3.0, 2.9, 2.8], 3, 0.0, None),  # improvement at epoch 4 resets the wait
        ([5, 4, 3.95, 3.9, 3.85, 3.8, 3.7], 2, 0.1, 3),  # steps of 0.05 are below min_delta
        ([5, 6, 1, 1, 1, 1, 1], 0, 0.0, 1),  # patience 0: the first non-improvement stops
    ],
)
def test_early_stopping_follows_patience_and_min_delta(values, patience, min_delta, stopped):
    stopper = EarlyStopping("valid_loss", patience=patience, min_delta=min_delta)
    learner = learner_with([Metrics(), Scripted(values), stopper])
    learner.fit(len(values))
    assert stopper.stopped_epoch == stopped
    assert learner.epoch == (stopped if stopped is not None else len(values) - 1)


def test_mode_max_and_restoring_the_best_weights():
    values = [0.1, 0.5, 0.4, 0.3]
    snapshots = []

    class Snap:
        reads = ("model",)
        run_before = ("EarlyStopping",)  # EarlyStopping cancels at its after_epoch: snapshot first

        def after_epoch(self, learner):
            snapshots.append(learner.model.weight.detach().clone())

    stopper = EarlyStopping("valid_loss", mode="max", patience=2, restore_best=True)
    learner = learner_with([Metrics(), Scripted(values), stopper, Snap()])
    learner.fit(4)
    assert stopper.best == 0.5 and stopper.best_epoch == 1 and stopper.stopped_epoch == 3
    assert torch.equal(learner.model.weight, snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[3])


def test_early_stopping_validates_its_arguments():
    with pytest.raises(ValueError, match="mode='lowest'"):
        EarlyStopping(mode="lowest")
    with pytest.raises(ValueError, match="patience=-1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="needs a Metrics callback"):
        learner_with([EarlyStopping()])


class NaNAt:
    """Makes the loss NaN from a given global step on."""

    reads = ("global_step",)
    writes = ("loss",)
    run_before = ("NaNGuard",)

    def __init__(self, step):
        self.step = step

    def after_loss(self, learner):
        if learner.phase == "train" and learner.global_step >= self.step:
            learner.loss = learner.loss * float("nan")


def test_nan_guard_stops_before_the_bad_step_touches_the_weights():
    weights = []

    class Track:
        reads = ("model",)

        def after_step(self, learner):
            weights.append(learner.model.weight.detach().clone())

    guard = NaNGuard()
    learner = learner_with([guard, NaNAt(4), Track()])
    with pytest.warns(RuntimeWarning, match=r"non-finite loss at epoch 1, batch 1 \(global step 4\)"):
        learner.fit(5)
    assert guard.tripped_at == (1, 1, 4)
    assert learner.global_step == 4
    assert torch.isfinite(learner.model.weight).all() and torch.equal(learner.model.weight, weights[-1])


def test_a_deferred_check_reports_the_first_bad_step_and_keeps_the_good_checkpoint(tmp_path):
    guard = NaNGuard(check_every=5)
    ckpt = Checkpoint(tmp_path, every_n_steps=1, keep_last=1)
    learner = learner_with([guard, NaNAt(6), ckpt], n_batches=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner.fit(5)
    assert guard.tripped_at == (1, 2, 6)  # first bad step, although noticed at the next check
    assert any("global step 6" in str(w.message) for w in caught)
    # NaN gradients reached the weights at step 6; the checkpoint stayed at the last good step.
    assert os.path.basename(ckpt.last) == "step-000000006.pt"
    from loopkit.resume.file import load_checkpoint

    state = load_checkpoint(ckpt.last)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not torch.isfinite(learner.model.weight).all()


def test_nan_guard_validates_check_every():
    with pytest.raises(ValueError, match="check_every=0"):
        NaNGuard(check_every=0)


# ----------------------------------------------------------------------------------------------- set-up mistakes fail at set-up
class CountSteps:
    reads = ("global_step",)

    def __init__(self):
        self.n = 0

    def after_step(self, learner):
        self.n += 1


def test_an_unknown_monitor_fails_before_training_and_lists_the_names():
    with pytest.raises(ValueError, match=r"monitor='valid_los'.*never produces.*\['valid_loss', "):
        learner_with([Metrics(), EarlyStopping("valid_los")])


def test_a_valid_monitor_without_valid_data_fails_before_training():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 2
    with pytest.raises(ValueError, match=r"monitor='valid_loss'.*no valid_data.*\['train_loss'\]"):
        Learner(
            model,
            data,
            torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.functional.mse_loss,
            callbacks=[Metrics(), EarlyStopping("valid_loss")],
        )


def test_valid_data_removed_after_construction_fails_at_the_start_of_fit():
    steps = CountSteps()
    learner = learner_with([Metrics(), EarlyStopping("valid_loss"), steps])
    learner.valid_data = None
    with pytest.raises(ValueError, match="no valid_data"):
        learner.fit(2)
    assert steps.n == 0


# ----------------------------------------------------------------------------------------------- non-finite
def test_check_finite_stops_at_once_on_a_non_finite_monitored_value():
    values = [5.0, 4.0, float("nan"), 3.0, 2.0]
    stopper = EarlyStopping("valid_loss", patience=3, check_finite=True)
    learner = learner_with([Metrics(), Scripted(values), stopper])
    learner.fit(5)
    assert (stopper.stopped_epoch, stopper.reason, learner.epoch, stopper.best) == (2, "non-finite", 2, 4.0)
    # Without the option the NaN epoch is one without improvement, and the run goes on.
    patient = EarlyStopping("valid_loss", patience=3)
    learner = learner_with([Metrics(), Scripted(values), patient])
    learner.fit(5)
    assert (patient.stopped_epoch, patient.reason, patient.best) == (None, None, 2.0)
    inf_stop = EarlyStopping("valid_loss", mode="max", check_finite=True)
    learner_with([Metrics(), Scripted([1.0, float("inf"), 2.0]), inf_stop]).fit(3)
    assert (inf_stop.stopped_epoch, inf_stop.reason) == (1, "non-finite")


def test_patience_is_the_reason_when_patience_stops():
    stopper = EarlyStopping("valid_loss", patience=1)
    learner_with([Metrics(), Scripted([1.0, 2.0, 3.0]), stopper]).fit(3)
    assert (stopper.stopped_epoch, stopper.reason) == (1, "patience")
    with pytest.raises(TypeError, match="check_finite=1"):
        EarlyStopping(check_finite=1)


def test_checkpoint_monitoring_an_unknown_metric_fails_when_the_learner_is_built(tmp_path):
    # The same kind as EarlyStopping's: the best-checkpoint monitor is checked before an epoch is spent.
    with pytest.raises(ValueError, match=r"Checkpoint\(monitor='valid_acc'\): Metrics never produces"):
        learner_with([Metrics(), Checkpoint(tmp_path, monitor="valid_acc")])


def test_metric_objects_names_are_known_at_set_up():
    torchmetrics = pytest.importorskip("torchmetrics")
    metrics = Metrics(torchmetrics.MeanSquaredError(), names=["mse"])
    learner_with([metrics, EarlyStopping("valid_mse")])  # a metric object's key is known too
    with pytest.raises(ValueError, match=r"monitor='valid_ms'.*never produces.*'valid_mse'"):
        learner_with([Metrics(torchmetrics.MeanSquaredError(), names=["mse"]), EarlyStopping("valid_ms")])
