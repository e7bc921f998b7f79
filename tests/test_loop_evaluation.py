"""learner.validate(data) and learner.predict(data) against hand computations."""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner, Metrics, accuracy
from loopkit.callbacks import MixedPrecision


def _classification(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = torch.randn(n, 4, generator=g)
        out.append((x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()))
    return out


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))


def test_validate_returns_the_sample_weighted_loss_and_the_metrics():
    train, data = _classification([16] * 3), _classification([8, 8, 3], seed=1)
    model = _model()
    metrics = Metrics(accuracy)
    learner = Learner(
        model,
        train,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        valid_data=train,
        callbacks=[metrics],
    )
    learner.fit(2)
    history = [dict(r) for r in metrics.history]
    model.train()
    result = learner.validate(data)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        n = sum(len(y) for _, y in data)
        loss = sum(torch.nn.functional.cross_entropy(model(x), y).item() * len(y) for x, y in data) / n
        acc = sum(accuracy(model(x), y).item() * len(y) for x, y in data) / n
    assert result["valid_loss"] == pytest.approx(loss, rel=1e-6)
    assert result["valid_accuracy"] == pytest.approx(acc, rel=1e-6)
    assert metrics.history == history  # the fit's record is untouched
    assert learner.validate()["valid_loss"] == pytest.approx(history[-1]["valid_loss"], rel=1e-9)


def test_predict_concatenates_the_predictions_of_batches_or_inputs():
    data = _classification([8, 8, 3])
    model = _model()
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    preds = learner.predict(data)
    inputs_only = learner.predict([x for x, _ in data])
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(x) for x, _ in data])
    assert torch.equal(preds, expected) and torch.equal(inputs_only, expected)
    assert not preds.requires_grad


def test_predict_and_validate_run_under_the_learners_precision():
    data = _classification([8, 8])
    model = _model()
    learner = Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[MixedPrecision(torch.bfloat16)],
    )
    preds = learner.predict(data)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.cat([model(x) for x, _ in data])
    assert preds.dtype == torch.bfloat16 and torch.equal(preds, expected)
    assert not torch.is_autocast_enabled("cpu")  # the autocast region was closed
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sum(torch.nn.functional.cross_entropy(model(x), y).item() * 8 for x, y in data) / 16
    assert learner.validate(data)["valid_loss"] == pytest.approx(loss, rel=1e-6)


def test_validate_needs_data():
    data = _classification([8])
    model = _model()
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    with pytest.raises(
        TypeError, match=r"built without valid_data; pass the batches to evaluate, learner\.validate\(data\)"
    ):
        learner.validate()
