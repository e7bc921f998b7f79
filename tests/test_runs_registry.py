"""Schedules and losses by name: each named curve against its formula or torch's scheduler, run by a Scheduler."""

from __future__ import annotations

import math

import pytest
import torch

from loopkit import Learner, Scheduler
from loopkit.runs.registry import SCHEDULES, make_loss, make_schedule, scheduler_per
from loopkit.schedules import onecycle
from loopkit.scheduling.optimizer_hyperparams import LearningRate

EPOCHS, BATCHES = 2, 10
N = EPOCHS * BATCHES


def applied(schedule, per="step", lr=1.0):
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * BATCHES
    scheduler = Scheduler({LearningRate: schedule}, per=per)
    Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=lr), torch.nn.functional.mse_loss, callbacks=[scheduler]
    ).fit(EPOCHS)
    return scheduler.history["lr"]


def test_linear_with_warmup_is_the_hand_formula():
    peak, warmup = 0.5, 0.1  # 2 warmup steps of 20
    expected = [peak * (k / N) / warmup if k / N < warmup else peak * (1 - k / N) / (1 - warmup) for k in range(N)]
    assert applied(make_schedule("linear", peak, {"warmup": warmup})) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_with_floor_is_the_hand_formula():
    peak, floor = 0.5, 0.05
    expected = [floor + (peak - floor) * (1 + math.cos(math.pi * k / N)) / 2 for k in range(N)]
    assert applied(make_schedule("cosine", peak, {"floor": floor})) == pytest.approx(expected, rel=1e-12)


def test_onecycle_by_name_equals_the_preset_in_epochs():
    by_name = applied(make_schedule("onecycle", 0.1, {"pct_start": 0.3}))
    assert by_name == pytest.approx(applied(onecycle(EPOCHS, 0.1, pct_start=0.3)), rel=1e-12)


def test_step_decay_equals_torch_multisteplr():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    torch_lr = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 15], gamma=0.5)
    expected = []
    for _ in range(N):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_lr.step()
    named = applied(make_schedule("step", 0.3, {"milestones": [0.5, 0.75], "gamma": 0.5}))
    assert named == pytest.approx(expected, rel=1e-12)


def test_exponential_and_restarts_fill_the_fit():
    exp = applied(make_schedule("exponential", 1.0, {"final_ratio": 0.01}))
    assert exp == pytest.approx([0.01 ** (k / N) for k in range(N)], rel=1e-12)
    sgdr = applied(make_schedule("cosine_restarts", 1.0, {"cycles": 2}))  # two cycles of 10 steps
    cycle = [(1 + math.cos(math.pi * k / 10)) / 2 for k in range(10)]
    assert sgdr == pytest.approx(cycle + cycle, rel=1e-12, abs=1e-15)


def test_per_epoch_holds_the_curve_sampled_at_each_epoch_start():
    lrs = applied(make_schedule("linear", 1.0), per=scheduler_per("epoch"))
    assert lrs == [1.0, 0.5]  # one value per epoch: fraction 0 and 0.5 of the fit


def test_every_schedule_builds_with_its_defaults():
    for name in SCHEDULES:
        assert make_schedule(name, 0.1).bind(steps_per_epoch=BATCHES, n_epochs=EPOCHS)(0) >= 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_schedule("cosyne", 0.1), "unknown schedule 'cosyne'; known: constant, linear, cosine"),
        (lambda: make_schedule("cosine", 0.1, {"warmpu": 0.1}), "no option.*'warmpu'.*warmup, floor"),
        (lambda: make_schedule("linear", 0.1, {"warmup": 1.5}), r"warmup=1\.5"),
        (lambda: make_schedule("step", 0.1, {"milestones": [0.7, 0.2]}), "strictly increasing"),
        (lambda: make_schedule("linear", "high"), "peak='high'"),
        (lambda: scheduler_per("iteration"), "'batch' or 'epoch'"),
        (lambda: make_loss("crossentropi"), "unknown loss 'crossentropi'; valid names: .*CrossEntropyLoss"),
        (lambda: make_loss("triplet_margin", {"margn": 1}), "TripletMarginLoss has no option.*'margn'.*margin"),
    ],
)
def test_bad_names_and_options_say_what_is_valid(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_losses_by_any_spelling_compute_torchs_loss():
    pred, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
    for name in ("cross_entropy", "CrossEntropyLoss", "crossentropy"):
        loss = make_loss(name, {"label_smoothing": 0.1})
        assert torch.equal(loss(pred, target), torch.nn.functional.cross_entropy(pred, target, label_smoothing=0.1))
    assert make_loss("TripletMargin", {"margin": 0.3}).margin == 0.3


def test_metric_learning_losses_and_miners_by_name_are_pytorch_metric_learnings():
    from pytorch_metric_learning import losses, miners

    from loopkit.runs.registry import MinedLoss, make_miner

    torch.manual_seed(0)
    embeddings, labels = torch.randn(32, 8), torch.randint(0, 4, (32,))
    ours = make_loss("pml:TripletMarginLoss", {"margin": 0.2}, miner=make_miner("triplet_margin", {"margin": 0.1}))
    assert isinstance(ours, MinedLoss) and isinstance(ours.miner, miners.TripletMarginMiner)
    # The reference: the library called directly, as its documentation shows.
    miner, loss = miners.TripletMarginMiner(margin=0.1), losses.TripletMarginLoss(margin=0.2)
    assert torch.equal(ours(embeddings, labels), loss(embeddings, labels, miner(embeddings, labels)))
    assert torch.equal(make_loss("pml:contrastive")(embeddings, labels), losses.ContrastiveLoss()(embeddings, labels))
    # The miner's margin is an attribute a Scheduler writes: a new value mines other triplets, as the library's.
    ours.miner.margin = 0.5
    wide = miners.TripletMarginMiner(margin=0.5)(embeddings, labels)
    assert all(torch.equal(a, b) for a, b in zip(ours.miner(embeddings, labels), wide))
    assert len(wide[0]) != len(miner(embeddings, labels)[0])


def test_a_scheduled_miner_margin_moves_in_a_fit():
    from loopkit import Attribute, Learner, Schedule, Scheduler
    from loopkit.runs.registry import make_miner

    model = torch.nn.Linear(4, 3)
    loss = make_loss("pml:triplet_margin", miner=make_miner("triplet_margin", {"margin": 0.0}))
    data = [(torch.randn(8, 4), torch.arange(8) % 2)] * 4
    scheduler = Scheduler({Attribute("loss_fn.miner.margin"): Schedule([0, 1], [0.0, 0.3], unit="fraction")})
    Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.01), loss, callbacks=[scheduler]).fit(1)
    # linear from 0 to 0.3 over 4 steps, set before each: 0, 0.075, 0.15, 0.225 (steps count from 0)
    assert scheduler.history["loss_fn.miner.margin"] == pytest.approx([0.0, 0.075, 0.15, 0.225], rel=1e-12)
    assert loss.miner.margin == pytest.approx(0.225, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_loss("pml:triplet_margn"), r"unknown pytorch-metric-learning loss 'pml:triplet_margn'"),
        (lambda: make_loss("cross_entropy", miner=object()), r"torch's, which takes no miner"),
    ],
)
def test_metric_learning_name_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_an_unknown_miner_or_option_is_refused():
    from loopkit.runs.registry import make_miner

    with pytest.raises(ValueError, match=r"unknown miner 'hardest'; valid names: .*TripletMarginMiner"):
        make_miner("hardest")
    with pytest.raises(ValueError, match="miner 'triplet_margin': bad option"):
        make_miner("triplet_margin", {"marign": 0.1})
