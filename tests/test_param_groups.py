"""Layer-wise learning-rate decay, no-decay groups, and head-only warm-up, in real training runs."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from loopkit import Callback, Learner, Scheduler, onecycle
from loopkit.param_groups import FreezeUntil, layerwise_groups, set_trainable
from loopkit.resume.frozen import norms_held_in_eval
from loopkit.scheduling.optimizer_hyperparams import LearningRate


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


def test_bad_arguments_of_the_new_options():
    blocks, _ = network()
    with pytest.raises(ValueError, match=r"convention='beit'"):
        layerwise_groups(blocks, lr=1e-3, decay=0.5, convention="beit")
    with pytest.raises(ValueError, match=r"lr=nan"):
        layerwise_groups(blocks, lr=float("nan"), decay=0.5)
    with pytest.raises(TypeError, match=r"trainable=0"):
        set_trainable(blocks, 0)


# ----------------------------------------------------------------------------------------------- conventions
def rates(groups):
    return [g["lr"] for g in groups if "/" not in g["name"]]  # one decayed group per block here


def test_zoobot_convention_worked_example():
    # Zoobot's docs: lr=1e-4, lr_decay=0.75: head 1e-4, highest block 1e-4, then 7.5e-5, 5.6e-5 (5.625e-5).
    blocks = [torch.nn.Linear(2, 2) for _ in range(4)]  # three blocks and a head
    zoobot = rates(layerwise_groups(blocks, lr=1e-4, decay=0.75, convention="zoobot"))
    assert zoobot == pytest.approx([5.625e-5, 7.5e-5, 1e-4, 1e-4], rel=1e-15)
    timm = rates(layerwise_groups(blocks, lr=1e-4, decay=0.75))  # one power further down
    assert timm == pytest.approx([1e-4 * 0.75**3, 1e-4 * 0.75**2, 1e-4 * 0.75, 1e-4], rel=1e-15)


def test_zoobot_decay_zero_trains_the_top_block_and_the_head():
    blocks = [torch.nn.Linear(2, 2) for _ in range(4)]
    assert rates(layerwise_groups(blocks, lr=1e-3, decay=0.0, convention="zoobot")) == [0.0, 0.0, 1e-3, 1e-3]
    assert rates(layerwise_groups(blocks, lr=1e-3, decay=0.0)) == [0.0, 0.0, 0.0, 1e-3]


# ----------------------------------------------------------------------------------------------- frozen norms
def bn_network():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
    # A parameterless batch norm outside the frozen block: not frozen by the rule, its statistics move.
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(8, affine=False), torch.nn.Linear(8, 1))
    return backbone, head, torch.nn.Sequential(backbone, head)


def stats(module):
    return [b.detach().clone() for b in module.buffers()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("how", ["FreezeUntil", "set_trainable", "layerwise_groups(decay=0)"])
def test_a_frozen_backbone_keeps_its_batch_norm_statistics(how):
    backbone, head, model = bn_network()
    callbacks = []
    if how == "FreezeUntil":
        callbacks.append(FreezeUntil([backbone], epoch=5))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
    elif how == "set_trainable":
        set_trainable([backbone], False)
        opt = torch.optim.SGD(head.parameters(), lr=0.1)
    else:
        opt = torch.optim.SGD(layerwise_groups([backbone, head], lr=0.1, decay=0.0), lr=0.1)
    backbone_before, head_before = stats(backbone), stats(head)
    weights = [p.detach().clone() for p in backbone.parameters()]
    frozen_throughout = pytest.warns(UserWarning, match="stay frozen") if how == "FreezeUntil" else nullcontext()
    with frozen_throughout:  # on purpose here: frozen for the whole fit
        Learner(model, data(), opt, torch.nn.functional.mse_loss, callbacks=callbacks).fit(2)
    assert same(weights, list(backbone.parameters()))  # the weights stay put ...
    assert same(backbone_before[:2], stats(backbone)[:2])  # ... and so do running mean and variance
    assert not same(head_before[:2], stats(head)[:2])  # the head's parameterless norm still learns statistics
    set_trainable([backbone], True)  # releases: the next train() puts the layer back in training mode
    model.train()
    assert backbone[1].training and norms_held_in_eval(model) == []


def test_freeze_until_releases_the_norms_when_the_backbone_unfreezes():
    backbone, _, model = bn_network()
    held = []

    class Watch(Callback):
        reads = ("model",)

        def after_batch(self, learner):
            held.append((learner.epoch, backbone[1].training))

    Learner(model, data(), torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
            callbacks=[FreezeUntil([backbone], epoch=1), Watch()]).fit(2)  # fmt: skip
    assert held == [(0, False)] * 4 + [(1, True)] * 4  # held while frozen, training once unfrozen


def test_freeze_norms_false_leaves_them_training():
    backbone, _, model = bn_network()
    before = stats(backbone)
    Learner(model, data(), torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
            callbacks=[FreezeUntil([backbone], epoch=5, freeze_norms=False)]).fit(1)  # fmt: skip
    assert not same(before[:2], stats(backbone)[:2])
