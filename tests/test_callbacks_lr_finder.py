"""The LR range test: exponential sweep, divergence stop, exact restore, suggestion rule, plot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from loopkit import Checkpoint, Learner, Metrics
from loopkit.callbacks import LRFinderResult, MixedPrecision, lr_find
from loopkit.callbacks.lr_finder import _suggest


def _setup(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([[1.0], [-1.0], [2.0], [0.5]])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
    return model, loader


def _learner(model, loader, callbacks=()):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return Learner(model, loader, opt, torch.nn.functional.mse_loss, valid_data=loader, callbacks=list(callbacks))


def test_the_sweep_is_exponential_and_stops_on_divergence():
    model, loader = _setup()
    result = lr_find(_learner(model, loader), start_lr=1e-4, end_lr=100.0, num_steps=80)
    n = len(result.lrs)
    assert result.diverged and 3 <= n < 80
    expected = [1e-4 * (100.0 / 1e-4) ** (i / 79) for i in range(n)]
    assert result.lrs == pytest.approx(expected, rel=1e-12)
    assert result.smoothed[-1] > 4.0 * min(result.smoothed[:-1])


def test_everything_is_restored_bit_for_bit_and_the_next_fit_is_unchanged(tmp_path):
    model, loader = _setup()
    twin_model, twin_loader = _setup()
    metrics, ckpt, mp = Metrics(), Checkpoint(tmp_path / "ckpt"), MixedPrecision(torch.float16)
    learner = _learner(model, loader, [mp, metrics, ckpt])
    twin = _learner(twin_model, twin_loader, [MixedPrecision(torch.float16), Metrics()])
    torch.manual_seed(1)
    learner.fit(1)
    torch.manual_seed(1)
    twin.fit(1)
    saved_files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    history, scale = copy.deepcopy(metrics.history), mp.scaler.get_scale()
    optimizer_state = copy.deepcopy(learner.optimizer.state_dict())
    model.eval()
    torch.manual_seed(2)
    result = lr_find(learner, start_lr=1e-5, end_lr=1.0, num_steps=40)
    assert len(result.lrs) > 3
    assert not model.training  # modes restored
    model.train()
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)
    state = learner.optimizer.state_dict()
    assert state["param_groups"] == optimizer_state["param_groups"]
    for key, entry in optimizer_state["state"].items():
        assert all(torch.equal(v, state["state"][key][k]) for k, v in entry.items())
    assert metrics.history == history and mp.scaler.get_scale() == scale  # the learner's callbacks untouched
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == saved_files  # no checkpoint written
    # The random generators are back where they were: the next fit matches the twin's bit for bit.
    learner.fit(2)
    torch.manual_seed(2)
    twin.fit(2)
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)


def test_apply_leaves_the_suggestion_set_keeping_group_ratios():
    model, loader = _setup()
    opt = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.01}, {"params": model[2].parameters(), "lr": 0.001}]
    )
    learner = Learner(model, loader, opt, torch.nn.functional.mse_loss)
    result = lr_find(learner, start_lr=1e-5, end_lr=10.0, num_steps=60, apply=True)
    assert opt.param_groups[0]["lr"] == result.suggestion
    assert opt.param_groups[1]["lr"] == pytest.approx(result.suggestion / 10, rel=1e-12)


def test_the_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 1, 141)  # 20 points a decade
    x = np.log10(lrs)
    # A loss falling fastest at lr = 1e-2 (x = -2, the logistic's inflection), then rising after 1e0.
    smoothed = 2 - 1 / (1 + np.exp(-3 * (x + 2))) + np.where(x > 0, 5 * x**2, 0)
    result = LRFinderResult(lrs=list(lrs), losses=list(smoothed), smoothed=list(smoothed))
    _suggest(result)
    assert result.suggestion == pytest.approx(1e-2, rel=1e-9)
    assert result.lr_min == pytest.approx(1e0 / 10, rel=1e-9)


def test_plot_writes_a_png(tmp_path):
    lrs = list(np.logspace(-5, 0, 20))
    result = LRFinderResult(lrs=lrs, losses=[1.0] * 20, smoothed=[1.0] * 20, suggestion=1e-3)
    result.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "0 < start_lr < end_lr"),
        ({"num_steps": 2}, "num_steps=2"),
        ({"smoothing": 1.0}, "smoothing=1.0"),
        ({"diverge": 1.0}, "diverge=1.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    model, loader = _setup()
    with pytest.raises(ValueError, match=match):
        lr_find(_learner(model, loader), **kwargs)
