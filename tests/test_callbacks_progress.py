"""ProgressBar: drawn on a terminal (or when forced), silent otherwise."""

from __future__ import annotations

import io

import pytest
import torch

from loopkit import Learner, ProgressBar


def fit_with(bar, epochs=2):
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 5
    Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=0.05), torch.nn.functional.mse_loss, callbacks=[bar]
    ).fit(epochs)


def test_forced_bar_shows_epochs_loss_and_lr():
    out = io.StringIO()
    fit_with(ProgressBar(file=out, force=True, refresh_every=2))
    text = out.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text
    assert "5/5" in text and "loss=" in text and "lr=0.05" in text


def test_silent_when_not_a_terminal_or_quiet():
    out = io.StringIO()  # StringIO is not a terminal
    bar = ProgressBar(file=out)
    fit_with(bar)
    assert out.getvalue() == "" and not bar.enabled
    quiet = ProgressBar(file=out, force=True, quiet=True)
    fit_with(quiet)
    assert out.getvalue() == ""


def test_refresh_every_is_validated():
    with pytest.raises(ValueError, match="refresh_every=0"):
        ProgressBar(refresh_every=0)
