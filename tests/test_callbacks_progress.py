"""ProgressBar: drawn on a terminal (or when forced), silent otherwise."""

from __future__ import annotations

import io
import re

import pytest
import torch

from loopkit import Learner, Metrics, ProgressBar


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
    assert "epoch 0 (1/2)" in text and "epoch 1 (2/2)" in text  # numbered from 0, as in Metrics.history
    assert "5/5" in text and "loss=" in text and "lr=0.05" in text


def test_one_line_per_epoch_when_not_a_terminal():
    # A job under nohup or CI: no bar, one line per epoch with the epoch's Metrics values, the lr and the time.
    out = io.StringIO()  # StringIO is not a terminal
    bar, metrics = ProgressBar(file=out), Metrics()
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 5
    Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=0.05), torch.nn.functional.mse_loss,
        valid_data=data[:2], callbacks=[bar, metrics],
    ).fit(2)  # fmt: skip
    lines = out.getvalue().splitlines()
    assert not bar.enabled and bar.lines and len(lines) == 2
    for epoch, (line, row) in enumerate(zip(lines, metrics.history)):
        pattern = (
            rf"epoch {epoch} \({epoch + 1}/2\)  train_loss {row['train_loss']:.4g}  valid_loss {row['valid_loss']:.4g}  "
            r"lr 0.05  time \d+\.\ds"
        )
        assert re.fullmatch(pattern, line), line


def test_without_metrics_the_line_shows_the_last_loss():
    out = io.StringIO()
    fit_with(ProgressBar(file=out), epochs=1)
    assert re.fullmatch(r"epoch 0 \(1/1\)  loss \d+\.?\d*(e-?\d+)?  lr 0.05  time \d+\.\ds\n", out.getvalue())


def test_with_only_a_step_budget_the_line_counts_steps():
    # fit(max_steps=N) has no epoch count: the line says how far through the step budget each epoch ended.
    out = io.StringIO()
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 5
    Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=0.05), torch.nn.functional.mse_loss,
        callbacks=[ProgressBar(file=out)],
    ).fit(max_steps=12)  # fmt: skip
    labels = [line.split("  ")[0] for line in out.getvalue().splitlines()]
    assert labels == ["epoch 0 (step 5/12)", "epoch 1 (step 10/12)", "epoch 2 (step 12/12)"]


def test_quiet_shows_nothing_and_a_forced_bar_writes_no_lines():
    out = io.StringIO()
    fit_with(ProgressBar(file=out, force=True, quiet=True))
    assert out.getvalue() == ""
    forced = io.StringIO()
    fit_with(ProgressBar(file=forced, force=True))
    assert "time " not in forced.getvalue()


def test_only_the_main_process_writes(monkeypatch):
    import loopkit.callbacks.progress as progress

    monkeypatch.setattr(progress, "is_main_process", lambda: False)
    out = io.StringIO()
    fit_with(ProgressBar(file=out))
    fit_with(ProgressBar(file=out, force=True))
    assert out.getvalue() == ""


def test_refresh_every_is_validated():
    with pytest.raises(ValueError, match="refresh_every=0"):
        ProgressBar(refresh_every=0)


def test_bad_options_fail_at_construction():
    with pytest.raises(TypeError, match=r"quiet='no'"):
        ProgressBar(quiet="no")
    with pytest.raises(TypeError, match=r"file='log.txt'.*write method"):
        ProgressBar(file="log.txt")
