"""Several evaluation sets in one fit, and ValidateFirst's evaluation before the first step (issue 25, point 5:
nanoGPT's ``estimate_loss`` at iteration 0 over a train split and a validation split, whose ``best_val_loss``
starts there), each against a hand-written loop."""

from __future__ import annotations

import math

import pytest
import torch

from loopkit import Checkpoint, EarlyStopping, Learner, Metrics, ValidateFirst, load_checkpoint
from loopkit.runs.record import Run

F = torch.nn.functional


def _data(n_batches, seed, size=16):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(size, 4, generator=g)
        out.append((x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(size, 1, generator=g)))
    return out


TRAIN, VALID = _data(6, 0), _data(3, 1, size=10)
SETS = {"train_estimate": TRAIN[:2], "valid": VALID}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _mean_loss(model, data):
    """What nanoGPT's estimate_loss computes, sample-weighted: eval mode, no gradients, mean over batches."""
    model.eval()
    with torch.no_grad():
        total = sum(F.mse_loss(model(x), y).double() * len(y) for x, y in data)
    model.train()
    return (total / sum(len(y) for _, y in data)).item()


def _hand(epochs, lr, first=True):
    """The hand-written loop: evaluate every set before training (if ``first``) and after every epoch."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rows = []
    if first:
        rows.append({"epoch": -1, **{f"{n}_loss": _mean_loss(model, d) for n, d in SETS.items()}})
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for epoch in range(epochs):
        total = torch.zeros((), dtype=torch.float64)
        for x, y in TRAIN:
            loss = F.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(y)
        row = {"epoch": epoch, "train_loss": (total / sum(len(y) for _, y in TRAIN)).item()}
        row.update({f"{n}_loss": _mean_loss(model, d) for n, d in SETS.items()})
        rows.append(row)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return rows, states


def _learner(lr, callbacks):
    model = _model()
    return Learner(model, TRAIN, torch.optim.SGD(model.parameters(), lr=lr), F.mse_loss, valid_data=SETS,
                   callbacks=callbacks)  # fmt: skip


def _close(rows, expected):
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
    for row, want in zip(rows, expected):
        for key, value in want.items():
            # float32 losses summed in float64 in both loops, in the same order: equal to a few ulps of float32.
            assert row[key] == pytest.approx(value, rel=1e-6, abs=0), key


def test_two_evaluation_sets_and_an_evaluation_before_training_match_a_hand_written_loop():
    metrics = Metrics()
    learner = _learner(0.05, [metrics, ValidateFirst()])
    learner.fit(3)
    expected, _ = _hand(3, 0.05)
    _close(metrics.history, expected)
    assert learner.validate() == pytest.approx({k: v for k, v in expected[-1].items() if k.endswith("_loss")
                                                and not k.startswith("train_loss")})  # fmt: skip


def test_without_validate_first_every_set_is_still_evaluated_each_epoch():
    metrics = Metrics()
    _learner(0.05, [metrics]).fit(2)
    expected, _ = _hand(2, 0.05, first=False)
    _close(metrics.history, expected)


def test_the_untrained_model_counts_for_checkpoint_best_and_for_early_stopping(tmp_path):
    # A learning rate so large that every epoch is worse than the untrained model: nanoGPT keeps
    # best_val_loss from iteration 0, and so must Checkpoint and EarlyStopping.
    expected, states = _hand(4, 0.5)
    assert all(row["valid_loss"] > expected[0]["valid_loss"] for row in expected[1:])  # the premise
    checkpoint = Checkpoint(tmp_path, monitor="valid_loss", every_epoch=False)
    stopping = EarlyStopping("valid_loss", patience=2, restore_best=True)
    learner = _learner(0.5, [Metrics(), ValidateFirst(), checkpoint, stopping])
    learner.fit(4)
    assert stopping.best_epoch == -1 and stopping.stopped_epoch == 1  # two epochs that did not beat it
    assert stopping.best == pytest.approx(expected[0]["valid_loss"], rel=1e-6)
    assert checkpoint.best[0] == pytest.approx(expected[0]["valid_loss"], rel=1e-6)
    saved = load_checkpoint(checkpoint.best[1])
    assert all(torch.equal(saved["model"][k], states[0][k]) for k in states[0])  # the untrained weights
    assert saved["position"]["global_step"] == 0
    assert all(torch.equal(v, states[0][k]) for k, v in learner.model.state_dict().items())  # restore_best


def test_a_later_epoch_that_beats_the_untrained_model_replaces_it(tmp_path):
    expected, states = _hand(3, 0.05)
    best = min(range(len(expected)), key=lambda i: expected[i]["valid_loss"])
    assert best > 0  # the premise: training helps
    checkpoint = Checkpoint(tmp_path, monitor="valid_loss", every_epoch=False)
    _learner(0.05, [Metrics(), ValidateFirst(), checkpoint]).fit(3)
    saved = load_checkpoint(checkpoint.best[1])
    assert saved["position"]["global_step"] == best * len(TRAIN)
    assert all(torch.equal(saved["model"][k], states[best][k]) for k in states[best])


def test_a_resumed_fit_does_not_evaluate_first_again_and_continues_exactly(tmp_path):
    whole = Metrics()
    _learner(0.05, [whole, ValidateFirst()]).fit(3)
    first = Metrics()
    checkpoint = Checkpoint(tmp_path)
    _learner(0.05, [first, ValidateFirst(), checkpoint]).fit(1)
    again = Metrics()
    _learner(0.05, [again, ValidateFirst()]).fit(3, resume_from=checkpoint.last)
    assert again.history == whole.history  # one epoch -1 row, then every epoch bit for bit


def test_a_run_counts_its_epochs_without_the_evaluation_before_training(tmp_path):
    run = Run.create(tmp_path, "exp", {}, name="r", monitor="valid_loss", mode="min")
    run.record_epochs([{"epoch": -1, "valid_loss": 0.5}, {"epoch": 0, "valid_loss": 0.7}])
    assert run.info["epochs_done"] == 1
    assert run.info["best"] == {"metric": "valid_loss", "value": 0.5, "epoch": -1}


def test_a_monitor_may_watch_any_evaluation_set_and_an_unknown_one_is_named():
    watcher = Checkpoint("unused", monitor="train_estimate_loss")
    _learner(0.05, [Metrics(), watcher])  # accepted when the Learner is built
    with pytest.raises(ValueError, match=r"'test_loss'.*'train_estimate_loss'|'test_loss'.*'valid_loss'"):
        _learner(0.05, [Metrics(), EarlyStopping("test_loss")])


@pytest.mark.parametrize(
    "valid_data, words",
    [
        ({}, "empty mapping"),
        ({"train": VALID}, "'train'"),
        ({"predict": VALID}, "'predict'"),
        ({"my set": VALID}, "'my set'"),
        ({"": VALID}, "''"),
        ({5: VALID}, "5"),
        ({"valid": []}, r"valid_data\['valid'\] is empty"),
        ({"valid": 3}, r"valid_data\['valid'\] must be an iterable"),
    ],
)
def test_bad_evaluation_sets_are_refused_when_the_learner_is_built(valid_data, words):
    model = _model()
    with pytest.raises((TypeError, ValueError), match=words):
        Learner(model, TRAIN, torch.optim.SGD(model.parameters(), lr=0.1), F.mse_loss, valid_data=valid_data)


def test_validate_first_without_valid_data_and_an_ambiguous_validate_are_refused():
    model = _model()
    learner = Learner(model, TRAIN, torch.optim.SGD(model.parameters(), lr=0.1), F.mse_loss,
                      callbacks=[ValidateFirst()])  # fmt: skip
    with pytest.raises(ValueError, match="ValidateFirst evaluates valid_data before training, but the Learner has"):
        learner.fit(1)
    with pytest.raises(ValueError, match=r"validate\(name='test'\) without data would evaluate 2 named sets"):
        _learner(0.05, []).validate(name="test")
    result = _learner(0.05, []).validate(VALID, name="test")
    assert list(result) == ["test_loss"] and math.isclose(result["test_loss"], _mean_loss(_model(), VALID),
                                                          rel_tol=1e-6)  # fmt: skip
