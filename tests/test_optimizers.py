"""Optimizers by name: every torch optimizer builds and trains in a Learner; errors list what is valid."""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner
from loopkit.optimizers import TORCH_OPTIMIZERS, make_optimizer

OPTIONS = {
    "SGD": {"lr": 0.05, "momentum": 0.9},
    "LBFGS": {"lr": 0.5, "max_iter": 5},
    "Adadelta": {"lr": 10.0},
    "Rprop": {"lr": 0.01},
    "ASGD": {"lr": 0.05},
    "Adagrad": {"lr": 0.1},
}


def regression():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


@pytest.mark.parametrize("name", [n for n in TORCH_OPTIMIZERS if n != "SparseAdam"])
def test_each_torch_optimizer_builds_by_name_and_reduces_the_loss(name):
    x, y = regression()
    model = torch.nn.Linear(3, 1)
    spelled = name.lower() if len(name) % 2 else name.upper()  # names are case-insensitive
    opt = make_optimizer(spelled, model.parameters(), OPTIONS.get(name, {"lr": 0.05}))
    assert type(opt) is getattr(torch.optim, name)
    before = torch.nn.functional.mse_loss(model(x), y).item()
    Learner(model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)], opt, torch.nn.functional.mse_loss).fit(
        10
    )
    assert torch.nn.functional.mse_loss(model(x), y).item() < 0.5 * before


def test_sparse_adam_trains_a_sparse_embedding():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 1, sparse=True), torch.nn.Flatten(0))
    target = torch.arange(10.0)
    opt = make_optimizer("SparseAdam", model.parameters(), {"lr": 0.1})
    data = [(torch.arange(10), target)] * 4
    before = torch.nn.functional.mse_loss(model(torch.arange(10)), target).item()
    Learner(model, data, opt, torch.nn.functional.mse_loss).fit(25)
    assert torch.nn.functional.mse_loss(model(torch.arange(10)), target).item() < 0.5 * before


def test_options_are_passed_and_merged():
    model = torch.nn.Linear(2, 1)
    opt = make_optimizer("adam", model.parameters(), {"lr": 1e-3, "betas": (0.8, 0.9)}, lr=2e-3)
    assert opt.defaults["lr"] == 2e-3 and opt.defaults["betas"] == (0.8, 0.9)


def test_unknown_names_and_options_list_the_valid_ones():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(
        ValueError, match=r"unknown optimizer 'adamx'; valid names \(any case\): Adadelta, .*AdamW.*SGD"
    ):
        make_optimizer("adamx", model.parameters())
    with pytest.raises(ValueError, match=r"SGD has no option\(s\) 'beta'; its options are lr, momentum"):
        make_optimizer("sgd", model.parameters(), {"lr": 0.1, "beta": 0.9})
    with pytest.raises(TypeError, match="got 3"):
        make_optimizer(3, model.parameters())


def test_loopkits_fused_optimizers_build_by_name():
    from loopkit.optim import FusedAdamW, FusedSGD

    model = torch.nn.Linear(2, 1)
    assert type(make_optimizer("fusedadamw", model.parameters(), {"lr": 1e-3})) is FusedAdamW
    assert type(make_optimizer("FusedSGD", model.parameters(), {"lr": 1e-3, "momentum": 0.9})) is FusedSGD


def test_options_reach_every_layerwise_group_that_does_not_set_its_own():
    from loopkit.optimizers import optimizer_settings
    from loopkit.param_groups import layerwise_groups

    torch.manual_seed(0)
    blocks = [torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)]
    ours = make_optimizer("AdamW", layerwise_groups(blocks, lr=1e-2, decay=0.5), {"lr": 1e-2, "weight_decay": 0.01})
    # The reference: torch.optim.AdamW built by hand, groups written out, weight decay only where it is meant.
    theirs = torch.optim.AdamW(
        [
            {"params": [blocks[0].weight], "lr": 2.5e-3},
            {"params": [blocks[0].bias], "lr": 2.5e-3, "weight_decay": 0.0},
            {"params": [blocks[1].weight, blocks[1].bias], "lr": 5e-3, "weight_decay": 0.0},
            {"params": [blocks[2].weight], "lr": 1e-2},
            {"params": [blocks[2].bias], "lr": 1e-2, "weight_decay": 0.0},
        ],
        lr=1e-2,
        weight_decay=0.01,
    )
    assert len(ours.param_groups) == len(theirs.param_groups)
    for a, b in zip(ours.param_groups, theirs.param_groups):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert {k: v for k, v in a.items() if k not in ("params", "name")} == {
            k: v for k, v in b.items() if k != "params"
        }
    settings = optimizer_settings(ours)
    assert settings["name"] == "AdamW"
    assert [g["weight_decay"] for g in settings["groups"]] == [g["weight_decay"] for g in theirs.param_groups]
    assert [g["weight_decay"] for g in settings["groups"]] == [0.01, 0.0, 0.0, 0.01, 0.0]
    assert [g["n_params"] for g in settings["groups"]] == [16, 4, 8, 8, 2]
    assert settings["groups"][0]["betas"] == [0.9, 0.999]


def test_an_explicit_layerwise_weight_decay_is_kept_over_the_options():
    from loopkit.param_groups import layerwise_groups

    blocks = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)]
    opt = make_optimizer(
        "adamw", layerwise_groups(blocks, lr=1e-2, decay=0.5, weight_decay=0.05), {"weight_decay": 0.01}
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.05, 0.0]
