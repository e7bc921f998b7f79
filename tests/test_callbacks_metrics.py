"""Metrics: per-phase, per-epoch averages weighted by batch size, against a hand computation."""

from __future__ import annotations

import pytest
import torch

from loopkit import CancelStep, Learner, Metrics, Schedule, Scheduler, accuracy
from loopkit.scheduling.optimizer_hyperparams import LearningRate


def classification(n=50, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]  # last batch has 2 samples


def test_epoch_averages_are_weighted_by_batch_size():
    train, valid = classification(), classification(n=21, batch=8, seed=1)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    metrics = Metrics(accuracy)
    seen = {"train": [], "valid": []}

    class Spy:
        """Records per-batch loss, accuracy and size independently of Metrics."""

        reads = ("loss", "pred", "yb", "phase")

        def after_loss(self, learner):
            seen[learner.phase].append(
                (learner.loss.item(), accuracy(learner.pred, learner.yb).item(), len(learner.yb))
            )

    Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        valid_data=valid,
        callbacks=[metrics, Spy()],
    ).fit(2)
    assert [row["epoch"] for row in metrics.history] == [0, 1]
    for epoch, row in enumerate(metrics.history):
        for phase, per_epoch in (("train", len(train)), ("valid", len(valid))):
            batches = seen[phase][epoch * per_epoch : (epoch + 1) * per_epoch]
            n = sum(size for _, _, size in batches)
            loss = sum(batch_loss * size for batch_loss, _, size in batches) / n
            acc = sum(a * size for _, a, size in batches) / n
            # Metrics sums in float64 on the device; the spy's per-batch floats were rounded to float32.
            assert row[f"{phase}_loss"] == pytest.approx(loss, rel=1e-6)
            assert row[f"{phase}_accuracy"] == pytest.approx(acc, rel=1e-6)
    # The unweighted mean over batches would differ: the 2-sample last batch would count like a 16-sample one.
    assert metrics.latest("valid_loss") == metrics.history[-1]["valid_loss"]
    with pytest.raises(KeyError, match=r"no metric 'valid_acc'.*valid_accuracy"):
        metrics.latest("valid_acc")


def test_metrics_expose_the_schedulers_per_step_values():
    train = classification()
    model = torch.nn.Linear(4, 3)
    scheduler = Scheduler({LearningRate: Schedule([0, 2], [0.1, 0.0])})
    metrics = Metrics()
    Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[metrics, scheduler],
    ).fit(2)
    assert metrics.hyperparams["lr"] is scheduler.history["lr"]
    assert len(metrics.hyperparams["lr"]) == 2 * len(train)


def test_metrics_reject_bad_arguments():
    with pytest.raises(TypeError, match="got 3"):
        Metrics(3)
    with pytest.raises(ValueError, match="names=\\['loss'\\]"):
        Metrics(accuracy, names=["loss"])


def test_state_round_trip_mid_phase():
    train = classification()
    model = torch.nn.Linear(4, 3)
    metrics = Metrics(accuracy)
    Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[metrics],
    ).fit(1)
    other = Metrics(accuracy)
    other.load_state_dict(metrics.state_dict())
    assert other.history == metrics.history and other._count == metrics._count
    assert torch.equal(other._sums, metrics._sums)


def test_train_loss_counts_only_steps_that_happened():
    """Issue 12 section 5: the loss of a cancelled step is not part of the training loss."""
    train = classification()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    metrics = Metrics(accuracy)
    seen = []

    class SkipSecond:
        reads = ("batch_idx", "loss", "pred", "yb")

        def after_loss(self, learner):
            seen.append((learner.loss.item(), accuracy(learner.pred, learner.yb).item(), len(learner.yb)))

        def before_step(self, learner):
            if learner.batch_idx == 1:
                raise CancelStep

    Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[metrics, SkipSecond()],
    ).fit(1)
    kept = [seen[i] for i in (0, 2, 3)]
    n = sum(size for _, _, size in kept)
    assert metrics.history[0]["train_loss"] == pytest.approx(sum(v * k for v, _, k in kept) / n, rel=1e-6)
    assert metrics.history[0]["train_accuracy"] == pytest.approx(sum(a * k for _, a, k in kept) / n, rel=1e-6)


def test_long_phases_fold_into_the_sums_without_changing_them(monkeypatch):
    from loopkit.callbacks import metrics as metrics_module

    train = classification(n=200, batch=3)
    results = []
    for flush_every in (1024, 5):
        monkeypatch.setattr(metrics_module, "FLUSH_EVERY", flush_every)
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        metrics = Metrics(accuracy)
        Learner(
            model,
            train,
            torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.functional.cross_entropy,
            valid_data=train,
            callbacks=[metrics],
        ).fit(1)
        results.append(metrics.history[0])
        assert len(metrics._sizes) == 0
    for key in results[0]:
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-12)  # float64 sums in another order
