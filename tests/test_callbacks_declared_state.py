"""Declared learner state: names in reads/writes are checked when the Learner is built; Metrics shares its results
as ``learner.metrics``, which the monitors read."""

from __future__ import annotations

import pytest
import torch

from loopkit import CallbackError, EarlyStopping, Learner, Metrics


def learner(callbacks, valid=True):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(2)]
    return Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        valid_data=data if valid else None,
        callbacks=callbacks,
    )


def declares(name, **decl):
    return type(name, (), {"after_epoch": lambda self, learner: None, **decl})()


@pytest.mark.parametrize(
    ("decl", "path", "close"),
    [
        ({"reads": ("optimzer.lr",)}, "optimzer.lr", "'optimizer'"),
        ({"writes": ("optimzer.lr",)}, "optimzer.lr", "'optimizer'"),
        ({"reads": ("los",)}, "los", "'loss'"),
        ({"reads": ("global_stp",)}, "global_stp", "'global_step'"),
    ],
)
def test_a_misspelt_name_fails_when_the_learner_is_built_naming_the_callback_and_the_closest_names(decl, path, close):
    kind = "reads" if "reads" in decl else "writes"
    with pytest.raises(CallbackError, match=rf"callback Typo declares {kind} '{path}'.*did you mean {close}"):
        learner([declares("Typo", **decl)])


def test_a_callback_may_add_state_for_others_to_read_but_not_read_state_nobody_writes():
    writer, reader = declares("Writer", writes=("temperature",)), declares("Reader", reads=("temperature",))
    built = learner([reader, writer])
    assert [type(cb).__name__ for cb in built.callbacks] == ["Writer", "Reader"]  # the writer runs first
    with pytest.raises(CallbackError, match="Reader declares reads 'temperature'"):
        learner([declares("Reader", reads=("temperature",))])  # nobody writes it


def test_metrics_shares_the_latest_epoch_as_learner_metrics_and_monitors_read_it():
    metrics, stopping = Metrics(), EarlyStopping("valid_loss", patience=0, min_delta=1e9)
    built = learner([stopping, metrics])
    assert built.metrics == {}
    built.fit(5)
    assert built.metrics is metrics.history[-1] and built.metrics["epoch"] == 1  # stopped after epoch 1
    assert stopping.best == metrics.history[0]["valid_loss"]  # read from learner.metrics after epoch 0
