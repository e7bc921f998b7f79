"""HyperParameter types: what each one sets, group ratios, attribute paths, and their errors."""

from __future__ import annotations

import types

import pytest
import torch

from loopkit.scheduling.hyperparams import Attribute, DropoutRate, HyperParameter
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum, WeightDecay


def fake_learner(optimizer=None, **attrs):
    """Hyperparameters only touch named learner attributes, so a namespace stands in for the learner here."""
    return types.SimpleNamespace(optimizer=optimizer, **attrs)


def two_group_sgd(lrs=(1e-3, 1e-4)):
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    return torch.optim.SGD(
        [{"params": a.parameters(), "lr": lrs[0]}, {"params": b.parameters(), "lr": lrs[1]}],
        momentum=0.9,
        weight_decay=0.01,
    )


def bound(hp, learner):
    hp.check(learner)
    hp.bind(learner)
    return hp


def test_learning_rate_keeps_each_groups_ratio_to_the_largest():
    opt = two_group_sgd((1e-3, 1e-4))
    lr = bound(LearningRate(), fake_learner(opt))
    lr.set(None, 0.5)
    # 0.5 * (1e-4 / 1e-3); the ratio is computed once, in floating point, so compare relatively.
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05, rel=1e-15)


def test_zero_base_groups_stay_frozen_and_unscaled_mode_gives_every_group_the_value():
    opt = two_group_sgd((1e-3, 0.0))
    bound(LearningRate(), fake_learner(opt)).set(None, 0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.0]
    bound(LearningRate(scale_groups=False), fake_learner(opt)).set(None, 0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_one_group_alone():
    opt = two_group_sgd()
    bound(LearningRate(group=1), fake_learner(opt)).set(None, 0.7)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.7]
    assert LearningRate(group=1).name == "lr/group1"
    with pytest.raises(ValueError, match=r"has 2 param group\(s\)"):
        LearningRate(group=2).check(fake_learner(opt))
    with pytest.raises(ValueError, match="group=-1"):
        LearningRate(group=-1)


def test_momentum_is_momentum_for_sgd_and_beta1_for_adam():
    sgd = two_group_sgd()
    bound(Momentum(), fake_learner(sgd)).set(None, 0.85)
    assert [g["momentum"] for g in sgd.param_groups] == [0.85, 0.85]
    adam = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), betas=(0.9, 0.99))
    m = bound(Momentum(), fake_learner(adam))
    m.set(None, 0.8)
    assert adam.param_groups[0]["betas"] == (0.8, 0.99)
    assert m.get(fake_learner(adam)) == 0.8


def test_weight_decay_and_a_clear_error_when_the_optimizer_has_no_such_value():
    opt = two_group_sgd()
    bound(WeightDecay(), fake_learner(opt)).set(None, 0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.05]
    rprop = torch.optim.Rprop(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=r"Rprop has no 'momentum'"):
        Momentum().check(fake_learner(rprop))


def test_ratios_survive_a_state_dict_round_trip_exactly():
    opt = two_group_sgd((3e-3, 7e-4))
    lr = bound(LearningRate(), fake_learner(opt))
    state = lr.state_dict()
    other = LearningRate()
    other.load_state_dict(state)
    assert other._ratios == lr._ratios == [1.0, 7e-4 / 3e-3]


def test_attribute_sets_a_float_and_fills_a_tensor_in_place():
    loss = torch.nn.TripletMarginLoss(margin=1.0)
    learner = fake_learner(loss_fn=loss, model=torch.nn.Module())
    learner.model.register_buffer("temperature", torch.tensor(1.0))
    margin = bound(Attribute("loss_fn.margin"), learner)
    margin.set(learner, 0.3)
    assert loss.margin == 0.3 and margin.get(learner) == 0.3
    temp = bound(Attribute("model.temperature"), learner)
    buffer = learner.model.temperature
    temp.set(learner, 0.5)
    assert learner.model.temperature is buffer and buffer.item() == 0.5


def test_attribute_reaches_module_children_by_name():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    learner = fake_learner(model=model)
    bound(Attribute("model.1.p"), learner).set(learner, 0.4)
    assert model[1].p == 0.4


@pytest.mark.parametrize(
    "path, error, message",
    [
        ("loss_fn.margn", AttributeError, r"learner.loss_fn has no attribute 'margn'"),
        ("los_fn.margin", AttributeError, r"learner has no attribute 'los_fn'"),
        ("loss_fn.reduction", TypeError, r"points at 'mean'"),
    ],
)
def test_attribute_errors_quote_the_path(path, error, message):
    learner = fake_learner(loss_fn=torch.nn.TripletMarginLoss())
    with pytest.raises(error, match=message):
        Attribute(path).check(learner)


@pytest.mark.parametrize("path", ["", "loss_fn", "loss fn.margin", 3])
def test_attribute_paths_are_validated_at_construction(path):
    with pytest.raises(ValueError, match=repr(path).replace("(", r"\(")):
        Attribute(path)


def test_dropout_rate_sets_every_dropout_module():
    model = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(2, 2), torch.nn.Dropout2d(0.2))
    learner = fake_learner(model=model)
    bound(DropoutRate(), learner).set(learner, 0.35)
    assert (model[0].p, model[2].p) == (0.35, 0.35)
    with pytest.raises(ValueError, match="no dropout module"):
        DropoutRate().check(fake_learner(model=torch.nn.Linear(2, 2)))


def test_a_custom_hyperparameter_is_a_few_lines():
    class Temperature(HyperParameter):
        writes = ("loss_fn.temperature",)

        def set(self, learner, value):
            learner.loss_fn.temperature = value

    learner = fake_learner(loss_fn=types.SimpleNamespace(temperature=1.0))
    t = Temperature()
    t.set(learner, 0.07)
    assert learner.loss_fn.temperature == 0.07 and t.name == "Temperature"
    with pytest.raises(NotImplementedError, match=r"Scheduler.history"):
        t.get(learner)
