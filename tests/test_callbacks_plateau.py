"""ReduceLROnPlateau against torch's own on recorded metric series: every rate, every epoch, every mode."""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner, Metrics
from loopkit.callbacks import ReduceLROnPlateau

# A recorded valid-loss series with plateaus, small improvements (below and above a 1e-2 threshold), a spike and
# a NaN; its negation drives the "max" mode.
SERIES = [
    1.0, 0.8, 0.79, 0.795, 0.79, 0.7, 0.699, 0.6995, 0.7, 0.71, 0.5, 0.5, 0.4999, 0.51, 0.52, 0.53,
    0.3, 0.31, 0.32, float("nan"), 0.33, 0.2, 0.2, 0.2, 0.2, 0.19, 0.18, 0.18, 0.18, 0.18,
]  # fmt: skip


class Scripted:
    """Replaces the epoch's valid_loss in Metrics with the recorded value."""

    reads = ("epoch",)
    run_after = ("Metrics",)
    run_before = ("ReduceLROnPlateau",)

    def __init__(self, values):
        self.values = values

    def after_epoch(self, learner):
        learner.callback(Metrics).history[-1]["valid_loss"] = self.values[learner.epoch]


class LRs:
    reads = ("optimizer",)
    run_after = ("ReduceLROnPlateau",)

    def __init__(self):
        self.seen = []

    def after_epoch(self, learner):
        self.seen.append([g["lr"] for g in learner.optimizer.param_groups])


def two_groups(model):
    return torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.05}], lr=0.1, momentum=0.9
    )


def torch_rates(series, kwargs):
    model = torch.nn.Linear(2, 1)
    opt = two_groups(model)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    rates = []
    for value in series:
        opt.step()
        sched.step(value)
        rates.append([g["lr"] for g in opt.param_groups])
    return rates


def loopkit_rates(series, kwargs, callbacks=()):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))]
    lrs, plateau = LRs(), ReduceLROnPlateau("valid_loss", **kwargs)
    learner = Learner(
        model, data, two_groups(model), torch.nn.functional.mse_loss, valid_data=data,
        callbacks=[Metrics(), Scripted(series), plateau, lrs, *callbacks],
    )  # fmt: skip
    learner.fit(len(series))
    return lrs.seen, plateau


CASES = [
    {"mode": "min", "patience": 2},
    {"mode": "min", "patience": 1, "threshold": 1e-2, "threshold_mode": "rel"},
    {"mode": "min", "patience": 1, "threshold": 1e-2, "threshold_mode": "abs"},
    {"mode": "min", "patience": 0, "cooldown": 2, "factor": 0.5},
    {"mode": "min", "patience": 0, "factor": 0.3, "min_lr": [1e-3, 2e-3]},
    {"mode": "min", "patience": 0, "factor": 0.5, "min_lr": 0.02, "eps": 1e-3},
    {"mode": "max", "patience": 1, "threshold": 1e-2, "threshold_mode": "rel"},
    {"mode": "max", "patience": 2, "threshold": 1e-2, "threshold_mode": "abs", "cooldown": 1},
]


@pytest.mark.parametrize("kwargs", CASES, ids=[str(c) for c in CASES])
def test_rates_match_torch_epoch_by_epoch(kwargs):
    series = SERIES if kwargs["mode"] == "min" else [-v for v in SERIES]
    ours, _ = loopkit_rates(series, kwargs)
    reference = torch_rates(series, kwargs)
    assert ours == reference  # the same float operations in the same order: equal to the bit
    assert len({tuple(r) for r in reference}) > 2  # the case really cuts, more than once


class AddGroup:
    """Adds a third param group (a fresh parameter at lr 0.07) at the start of epoch ``epoch``."""

    reads = ("epoch",)
    writes = ("optimizer.param_groups",)

    def __init__(self, epoch):
        self.epoch, self.param = epoch, torch.nn.Parameter(torch.zeros(1))

    def before_epoch(self, learner):
        if learner.epoch == self.epoch:
            learner.optimizer.add_param_group({"params": [self.param], "lr": 0.07})


def test_a_group_added_during_the_fit_is_cut_with_the_others_as_torch_does():
    kwargs = {"patience": 0, "factor": 0.5, "min_lr": 0.01}
    ours, _ = loopkit_rates(SERIES, kwargs, callbacks=[AddGroup(epoch=6)])
    model = torch.nn.Linear(2, 1)
    opt = two_groups(model)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    reference = []
    for epoch, value in enumerate(SERIES):
        if epoch == 6:
            opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.07})
        opt.step()
        sched.step(value)
        reference.append([g["lr"] for g in opt.param_groups])
    assert ours == reference
    assert len({r[2] for r in reference[6:]}) > 2  # the added group really is cut, down to its floor
    assert reference[-1][2] == 0.01


def test_per_group_floors_refuse_a_group_added_during_the_fit_before_any_cut():
    with pytest.raises(ValueError, match=r"gives 2 floors but the optimizer now has 3 param groups.*single min_lr"):
        loopkit_rates(SERIES, {"patience": 0, "min_lr": [1e-3, 2e-3]}, callbacks=[AddGroup(epoch=3)])


def test_state_survives_a_checkpoint_round_trip():
    kwargs = {"patience": 1, "cooldown": 2, "factor": 0.5}
    _, plateau = loopkit_rates(SERIES[:12], kwargs)
    state = plateau.state_dict()
    other = ReduceLROnPlateau("valid_loss", **kwargs)
    other.load_state_dict(state)
    assert other.state_dict() == state and set(state) == {"best", "num_bad_epochs", "cooldown_counter"}


def test_resume_continues_exactly(tmp_path):
    from loopkit import Checkpoint

    kwargs = {"patience": 1, "cooldown": 1, "factor": 0.5}
    full, _ = loopkit_rates(SERIES, kwargs)
    ckpt = Checkpoint(tmp_path, keep_last=30)
    loopkit_rates(SERIES, kwargs, callbacks=[ckpt])
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))]
    lrs = LRs()
    learner = Learner(
        model, data, two_groups(model), torch.nn.functional.mse_loss, valid_data=data,
        callbacks=[Metrics(), Scripted(SERIES), ReduceLROnPlateau("valid_loss", **kwargs), lrs],
    )  # fmt: skip
    resume = sorted(tmp_path.glob("*.pt"))[13]  # after epoch 13
    learner.fit(len(SERIES), resume_from=resume)
    assert lrs.seen == full[len(full) - len(lrs.seen) :] and len(lrs.seen) < len(full)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"factor": 1.0}, "factor=1.0"),
        ({"factor": 0}, "factor=0"),
        ({"mode": "lowest"}, "mode='lowest'"),
        ({"threshold_mode": "relative"}, "threshold_mode='relative'"),
        ({"patience": -1}, "patience=-1"),
        ({"min_lr": -1.0}, "min_lr=-1.0"),
        ({"threshold": float("nan")}, "threshold=nan"),
    ],
)
def test_bad_arguments_are_quoted(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        ReduceLROnPlateau("valid_loss", **kwargs)


def test_set_up_mistakes_fail_when_the_learner_is_built():
    model = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))]

    def build(plateau, valid=data):
        Learner(model, data, two_groups(model), torch.nn.functional.mse_loss, valid_data=valid,
                callbacks=[Metrics(), plateau])  # fmt: skip

    with pytest.raises(ValueError, match=r"monitor='val_loss'.*never produces"):
        build(ReduceLROnPlateau("val_loss"))
    with pytest.raises(ValueError, match=r"no valid_data"):
        build(ReduceLROnPlateau("valid_loss"), valid=None)
    with pytest.raises(ValueError, match=r"3 floors for 2 param groups"):
        build(ReduceLROnPlateau("valid_loss", min_lr=[0.0, 0.0, 0.0]))
