"""Metrics with metric objects (torchmetrics): whole-phase values, not averages of batches; state survives a
checkpoint. Reference: scikit-learn's f1_score on the same predictions."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score

from loopkit import Learner, Metrics, accuracy

torchmetrics = pytest.importorskip("torchmetrics")


def problem():
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    return x, y, data, torch.nn.Linear(4, 3)


def test_a_metric_object_gives_the_whole_phase_value_next_to_averaged_functions():
    x, y, data, model = problem()
    f1 = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    metrics = Metrics(accuracy, f1, names=["acc", "f1"])
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy,
                      valid_data=data, callbacks=[metrics])  # fmt: skip
    learner.fit(2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    row = metrics.history[-1]
    # float32 inside torchmetrics: ~1e-7 relative; macro F1 of the whole set, which no batch average gives
    assert row["valid_f1"] == pytest.approx(f1_score(y, pred, average="macro"), rel=1e-6)
    assert row["valid_acc"] == pytest.approx((pred == y).double().mean().item(), rel=1e-6)
    assert sorted(row) == ["epoch", "train_acc", "train_f1", "train_loss", "valid_acc", "valid_f1", "valid_loss"]


def test_a_metric_objects_state_round_trips_through_state_dict_mid_phase():
    _, _, data, model = problem()
    f1 = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    metrics = Metrics(f1, names=["f1"])
    batches = list(data)
    for xb, yb in batches[:3]:
        f1.update(model(xb).detach(), yb)
    saved = metrics.state_dict()
    fresh = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    restored = Metrics(fresh, names=["f1"])
    restored.load_state_dict(saved)
    for xb, yb in batches[3:]:
        f1.update(model(xb).detach(), yb)
        fresh.update(model(xb).detach(), yb)
    assert torch.equal(f1.compute(), fresh.compute())
