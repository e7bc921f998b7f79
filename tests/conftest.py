"""Shared fixtures: tiny seeded regression problems that train in milliseconds on a CPU."""

from __future__ import annotations

import pytest
import torch


def make_regression(n: int = 64, batch: int = 16, seed: int = 0):
    """A linear-regression problem: list-of-batches data and the true weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5]])
    y = x @ w
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)], x, y


@pytest.fixture
def regression():
    torch.manual_seed(0)
    data, _x, _y = make_regression()
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, data, optimizer, torch.nn.functional.mse_loss
