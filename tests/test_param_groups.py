"""Layer-wise learning-rate decay, no-decay groups, and head-only warm-up, in real training runs."""

from __future__ import annotations

import pytest
import torch

from loopkit import Callback, Learner, Scheduler, onecycle
from loopkit.hyperparams import LearningRate
from loopkit.param_groups import FreezeUntil, layerwise_groups


def network():
    torch.manual_seed(0)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU()),
        torch.nn.Linear(8, 1),
    ]
    return blocks, torch.nn.Sequential(*blocks)


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    return [(x[i : i + 16], x[i : i + 16].sum(1, keepdim=True).sin()) for i in range(0, 64, 16)]


def group(groups, name):
    return next(g for g in groups if g["name"] == name)


def test_rates_fall_by_decay_per_block_from_the_head_down():
    blocks, _ = network()
    groups = layerwise_groups(blocks, lr=1e-2, decay=0.3, weight_decay=0.05)
    assert group(groups, "head")["lr"] == 1e-2
    assert group(groups, "block1")["lr"] == pytest.approx(1e-2 * 0.3, rel=1e-15)
    assert group(groups, "block0")["lr"] == pytest.approx(1e-2 * 0.09, rel=1e-15)
    all_params = [p for g in groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == sum(1 for b in blocks for _ in b.parameters())


def test_biases_and_norms_go_without_weight_decay_and_the_head_on_request():
    blocks, _ = network()
    groups = layerwise_groups(blocks, lr=1e-2, decay=0.5, weight_decay=0.05, no_decay_head=True)
    block0 = group(groups, "block0/no_decay")["params"]
    # Linear bias + LayerNorm weight and bias
    assert {id(p) for p in block0} == {id(blocks[0][0].bias), id(blocks[0][1].weight), id(blocks[0][1].bias)}
    assert group(groups, "block0")["params"] == [blocks[0][0].weight]
    assert group(groups, "block0")["weight_decay"] == 0.05 and group(groups, "block0/no_decay")["weight_decay"] == 0.0
    assert [g["name"] for g in groups if g["name"].startswith("head")] == ["head/no_decay"]


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_decay_zero_trains_only_the_head_and_one_trains_all_at_one_rate(decay):
    blocks, model = network()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(layerwise_groups(blocks, lr=0.05, decay=decay), momentum=0.9)
    if decay == 1.0:
        assert len({g["lr"] for g in opt.param_groups}) == 1
    Learner(model, data(), opt, torch.nn.functional.mse_loss).fit(2)
    head = {id(p) for p in blocks[-1].parameters()}
    for p, old in zip(model.parameters(), before):
        changed = not torch.equal(p, old)
        assert changed == (id(p) in head or decay == 1.0)


def test_a_schedule_keeps_the_ratios_between_groups():
    blocks, model = network()
    opt = torch.optim.AdamW(layerwise_groups(blocks, lr=1e-2, decay=0.5, weight_decay=0.01))
    seen = []

    class Rates(Callback):
        reads = ("optimizer",)

        def before_step(self, learner):
            seen.append({g["name"]: g["lr"] for g in learner.optimizer.param_groups})

    scheduler = Scheduler({LearningRate: onecycle(3, 3e-2)})
    Learner(model, data(), opt, torch.nn.functional.mse_loss, callbacks=[scheduler, Rates()]).fit(3)
    for rates, value in zip(seen, scheduler.history["lr"]):
        assert rates["head"] == value
        assert rates["block1"] == pytest.approx(value * 0.5, rel=1e-15)
        assert rates["block0/no_decay"] == pytest.approx(value * 0.25, rel=1e-15)


def test_head_only_warm_up_then_full_fine_tuning():
    blocks, model = network()
    backbone = blocks[:-1]
    snapshots = []

    class Snap(Callback):
        reads = ("model",)

        def after_epoch(self, learner):
            snapshots.append([p.detach().clone() for p in model.parameters()])

    opt = torch.optim.AdamW(layerwise_groups(blocks, lr=1e-2, decay=0.5, weight_decay=0.01))
    Learner(model, data(), opt, torch.nn.functional.mse_loss, callbacks=[FreezeUntil(backbone, epoch=2), Snap()]).fit(4)
    n_backbone = sum(1 for b in backbone for _ in b.parameters())
    start = list(network()[1].parameters())  # same seed: the initial weights
    for epoch, params in enumerate(snapshots):
        backbone_moved = any(not torch.equal(a, b) for a, b in zip(params[:n_backbone], start[:n_backbone]))
        head_moved = any(not torch.equal(a, b) for a, b in zip(params[n_backbone:], start[n_backbone:]))
        assert head_moved
        assert backbone_moved == (epoch >= 2)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen at the end of the fit


def test_bad_arguments():
    blocks, _ = network()
    with pytest.raises(ValueError, match=r"decay=1.5"):
        layerwise_groups(blocks, lr=1e-3, decay=1.5)
    with pytest.raises(TypeError, match="non-empty list of modules"):
        layerwise_groups([], lr=1e-3, decay=0.5)
    with pytest.raises(ValueError, match="also belongs to an earlier block"):
        layerwise_groups([blocks[0], blocks[0]], lr=1e-3, decay=0.5)
    with pytest.raises(ValueError, match="epoch=-1"):
        FreezeUntil(blocks, epoch=-1)
