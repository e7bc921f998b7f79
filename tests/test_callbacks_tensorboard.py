"""TensorBoard: real event files, read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from loopkit import Learner, Metrics, Schedule, Scheduler, TensorBoard, accuracy
from loopkit.scheduling.hyperparams import HyperParameter
from loopkit.scheduling.optimizer_hyperparams import LearningRate


class Temperature(HyperParameter):
    writes = ("loss_fn.temperature",)

    def set(self, learner, value):
        learner.loss_fn.temperature = value


class TempCE(torch.nn.Module):
    temperature = 1.0

    def forward(self, pred, target):
        return torch.nn.functional.cross_entropy(pred / self.temperature, target)


def read(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_event_files_hold_losses_hyperparameters_and_metrics(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(5)]
    model = torch.nn.Linear(4, 3)
    losses = []

    class Spy:
        reads = ("loss", "phase")

        def after_loss(self, learner):
            if learner.phase == "train":
                losses.append(learner.loss.item())

    scheduler = Scheduler(
        {LearningRate: Schedule([0, 3], [0.1, 0.01], anneal="cos"), Temperature: Schedule([0, 3], [2.0, 1.0])}
    )
    metrics = Metrics(accuracy)
    Learner(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        TempCE(),
        valid_data=data[:2],
        callbacks=[TensorBoard(tmp_path, flush_every=4), scheduler, metrics, Spy()],
    ).fit(3)
    acc = read(tmp_path)
    # Event files store float32: compare at float32 precision.
    assert [s for s, _ in scalars(acc, "train/loss")] == list(range(15))
    assert [v for _, v in scalars(acc, "train/loss")] == pytest.approx(losses, rel=1e-6)
    for name in ("lr", "Temperature"):
        logged = scalars(acc, f"hparams/{name}")
        assert [s for s, _ in logged] == list(range(15))
        assert [v for _, v in logged] == pytest.approx(scheduler.history[name], rel=1e-6)
    for key in ("train_loss", "valid_loss", "valid_accuracy"):
        logged = scalars(acc, f"epoch/{key}")
        assert [s for s, _ in logged] == [5, 10, 15]
        assert [v for _, v in logged] == pytest.approx([row[key] for row in metrics.history], rel=1e-6)
    text = acc.Tensors("run/hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| n_epochs | 3 |" in text and "| group0/lr | 0.1 |" in text and "| status | finished |" in text
    assert "schedule/Temperature | Schedule([0.0, 3.0], [2.0, 1.0]" in text


def test_nothing_is_imported_before_fit_and_the_writer_closes_on_error(tmp_path):
    model = torch.nn.Linear(2, 1)
    tb = TensorBoard(tmp_path)

    class Boom:
        def after_step(self, learner):
            raise RuntimeError("boom")

    learner = Learner(
        model,
        [(torch.randn(2, 2), torch.randn(2, 1))] * 3,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        callbacks=[tb, Boom()],
    )
    assert tb.writer is None
    with pytest.raises(RuntimeError, match="boom"):
        learner.fit(1)
    assert tb.writer is None  # closed in after_fit
    acc = read(tmp_path)
    assert [s for s, _ in scalars(acc, "train/loss")] == [0]  # the buffered loss was flushed
    # The failed run is in the run summary too (a sweep compares failed and pruned trials with the others).
    text = acc.Tensors("run/hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| status | RuntimeError |" in text


def test_flush_every_is_validated():
    with pytest.raises(ValueError, match="flush_every=0"):
        TensorBoard("runs", flush_every=0)


def test_bad_set_up_fails_at_construction(monkeypatch):
    import importlib.util

    from loopkit import TensorBoard

    with pytest.raises(TypeError, match=r"logdir=None"):
        TensorBoard(None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoard("runs/x")


def test_a_plateau_cut_is_logged_as_the_optimizer_used_it_and_equals_torchs(tmp_path):
    # The lr each step used is read from the optimizer after the step, so a ReduceLROnPlateau cut (which no
    # Scheduler's history holds) appears in hparams/lr, per group; it must equal torch's ReduceLROnPlateau stepped
    # with the same metric sequence.
    from loopkit.callbacks import ReduceLROnPlateau

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    model = torch.nn.Linear(4, 3)
    groups = [{"params": [model.weight], "lr": 0.4}, {"params": [model.bias], "lr": 0.1}]
    metrics = Metrics()
    kwargs = {"mode": "min", "factor": 0.5, "patience": 0, "threshold": 0.1}  # cuts unless the loss drops by 10%
    Learner(
        model,
        data,
        torch.optim.SGD(groups, lr=0.4),
        torch.nn.functional.cross_entropy,
        callbacks=[metrics, ReduceLROnPlateau("train_loss", **kwargs), TensorBoard(tmp_path, flush_every=4)],
    ).fit(6)

    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    reference = torch.optim.SGD([{"params": [params[0]], "lr": 0.4}, {"params": [params[1]], "lr": 0.1}])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(reference, **kwargs)
    expected = {0: [], 1: []}
    for row in metrics.history:  # the rates of an epoch's steps, then the epoch's metric steps torch's scheduler
        for i, group in enumerate(reference.param_groups):
            expected[i] += [group["lr"]] * len(data)
        plateau.step(row["train_loss"])

    acc = read(tmp_path)
    for i, tag in enumerate(("hparams/lr", "hparams/lr/group1")):
        logged = scalars(acc, tag)
        assert [s for s, _ in logged] == list(range(18))
        assert [v for _, v in logged] == pytest.approx(expected[i], rel=1e-6)  # float32 event files
    assert len(set(expected[0])) > 2  # the run really cut, more than once
