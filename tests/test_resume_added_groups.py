"""A run that added param groups during its fit (unfreezing a backbone half-way) resumes in an optimizer built as
at the start: the checkpoint records each group's parameter names, and the resume re-adds the missing groups.

The reference is the same run left uninterrupted: resumed, it must end bit-identical (CPU, same ops, same order).
"""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import Callback, Learner, LearningRate, Schedule, Scheduler
from loopkit.resume.file import CheckpointError

from .test_resume import Snapshot


def holds(optimizer, params):
    """Whether any param group already holds one of ``params`` (an unfreeze that may run again on resume)."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return any(id(p) in held for p in params)


class Unfreeze(Callback):
    """Adds the body as a new param group at lr ``x`` at the start of epoch ``epoch``, once."""

    reads = ("epoch",)
    writes = ("optimizer.param_groups",)

    def __init__(self, body, epoch, x, named=False):
        self.body, self.epoch, self.x, self.named = body, epoch, x, named

    def before_epoch(self, learner):
        params = list(self.body.parameters())
        if learner.epoch >= self.epoch and not holds(learner.optimizer, params):
            self.body.requires_grad_(True)  # a no-op unless the body was frozen until now
            group = list(self.body.named_parameters(prefix="0")) if self.named else params
            learner.optimizer.add_param_group({"params": group, "lr": self.x})


class Lrs(Callback):
    def __init__(self):
        self.seen = []

    def before_step(self, learner):
        self.seen.append([g["lr"] for g in learner.optimizer.param_groups])


def make(named=False, optimizer=torch.optim.AdamW, extra=(), frozen=False):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    body, head = model[0], model[2]
    body.requires_grad_(not frozen)  # frozen: no gradient until it joins; else gradients nobody steps on
    head_params = list(head.named_parameters(prefix="2")) if named else list(head.parameters())
    opt = optimizer(head_params, lr=0.05)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 4, generator=g)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True).sin()), batch_size=6, shuffle=True
    )
    lrs = Lrs()
    callbacks = [
        Scheduler({LearningRate: Schedule([0, 4], [0.05, 0.0])}),
        Unfreeze(body, epoch=2, x=0.01, named=named),
        lrs,
        *extra,
    ]
    return Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=callbacks), lrs


@pytest.mark.parametrize(
    "snapshot",
    [{"at_step": 5}, {"at_epoch": 2}, {"at_step": 10}, {"at_step": 12}],
    ids=["before-the-add", "after-epoch-2", "mid-epoch-2", "epoch-3-start"],
)
@pytest.mark.parametrize(
    ("named", "frozen"), [(False, False), (True, False), (False, True)], ids=["plain", "named-params", "frozen-body"]
)
def test_a_run_that_added_a_group_resumes_bit_identical_in_an_optimizer_built_as_at_the_start(snapshot, named, frozen):
    # Not frozen, the body's gradients are computed before it joins: the Learner clears them with the others
    # after each step (torch's optimizer.zero_grad would leave them to pile up into its first step). Frozen, the
    # resume must unfreeze what the run had unfrozen (the checkpoint's "frozen" entry).
    snap = Snapshot(**snapshot)
    straight, straight_lrs = make(named, extra=[snap], frozen=frozen)
    torch.manual_seed(7)
    straight.fit(4)
    assert len(snap.state["optimizer"]["param_groups"]) == (1 if snapshot == {"at_step": 5} else 2)

    resumed, resumed_lrs = make(named, frozen=frozen)
    assert len(resumed.optimizer.param_groups) == 1
    resumed.fit(4, resume_from=snap.state)

    assert len(resumed.optimizer.param_groups) == 2
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    # After the resume, the added group follows the schedule at the ratio it had (0.01 / the lr when it joined).
    n = len(resumed_lrs.seen)
    assert resumed_lrs.seen == straight_lrs.seen[-n:]
    assert resumed_lrs.seen[-1][1] / resumed_lrs.seen[-1][0] == pytest.approx(
        straight_lrs.seen[8][1] / straight_lrs.seen[8][0], rel=1e-12
    )
    state_a, state_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for i, entry in state_a["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b["state"][i][key]))


def test_groups_holding_other_parameters_are_refused_before_anything_is_loaded():
    # Two same-shaped layers: the old check (counts and shapes) let their moments load into each other's slots.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    data = [(torch.randn(2, 3), torch.randn(2, 3))]
    a = Learner(
        model,
        data,
        torch.optim.Adam([{"params": model[0].parameters()}, {"params": model[1].parameters()}]),
        torch.nn.functional.mse_loss,
    )
    a.fit(1)
    state = a.state_dict()
    other = copy.deepcopy(model)
    swapped = torch.optim.Adam([{"params": other[1].parameters()}, {"params": other[0].parameters()}])
    b = Learner(other, data, swapped, torch.nn.functional.mse_loss)
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(
        CheckpointError,
        match=r"param group 0 holds \['1.weight', '1.bias'\] in the optimizer, \['0.weight', '0.bias'\] in the checkpoint",
    ):
        b.fit(2, resume_from=state)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert swapped.state == {}


def test_an_added_group_whose_parameters_the_optimizer_already_holds_is_refused():
    snap = Snapshot(at_epoch=2)
    straight, _ = make(extra=[snap])
    straight.fit(4)
    torch.manual_seed(0)
    model = copy.deepcopy(straight.model)
    everything = torch.optim.AdamW(model.parameters(), lr=0.05)  # one group holding body and head
    learner = Learner(model, straight.train_data, everything, torch.nn.functional.mse_loss)
    with pytest.raises(
        CheckpointError,
        match=r"param group 0 holds .*'0.weight'.*in the optimizer, \['2.weight', '2.bias'\] in the checkpoint",
    ):
        learner.fit(4, resume_from=snap.state)
    assert len(everything.param_groups) == 1


def test_a_state_without_a_layout_still_needs_the_same_number_of_groups():
    snap = Snapshot(at_epoch=2)
    straight, _ = make(extra=[snap])
    straight.fit(4)
    del snap.state["param_layout"]  # a format-2 state written before the layout was recorded
    resumed, _ = make()
    with pytest.raises(
        CheckpointError, match=r"the optimizer has 1 param groups, the checkpoint 2 \(it records no param_layout"
    ):
        resumed.fit(4, resume_from=snap.state)
    assert len(resumed.optimizer.param_groups) == 1


def test_a_group_of_parameters_outside_the_model_cannot_be_re_added():
    extra = torch.nn.Parameter(torch.zeros(2))  # e.g. a learnable loss margin, not in the model

    class AddExtra(Callback):
        writes = ("optimizer.param_groups",)
        run_after = (Unfreeze,)

        def before_epoch(self, learner):
            if learner.epoch == 1 and not holds(learner.optimizer, [extra]):
                learner.optimizer.add_param_group({"params": [extra], "lr": 0.1})

    snap = Snapshot(at_epoch=1)
    straight, _ = make(extra=[AddExtra(), snap])
    straight.fit(4)
    assert snap.state["param_layout"][-1] == [None]
    resumed, _ = make()
    with pytest.raises(CheckpointError, match=r"parameters outside this model .*build the optimizer with that group"):
        resumed.fit(4, resume_from=snap.state)


def test_gradients_of_parameters_outside_the_optimizer_are_cleared_after_each_step():
    # torch's optimizer.zero_grad clears only its own parameters, so a body outside the optimizer sums its
    # gradients step after step; the Learner clears them with the others: each step's body gradient is that
    # step's alone, as in a hand-written loop that calls model.zero_grad().
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    data = [(torch.randn(6, 4), torch.randn(6, 1)) for _ in range(3)]

    def hand_written(zero_all):
        net = copy.deepcopy(model)
        opt = torch.optim.SGD(net[2].parameters(), lr=0.1)
        grads = []
        for x, y in data:
            torch.nn.functional.mse_loss(net(x), y).backward()
            grads.append(net[0].weight.grad.clone())
            opt.step()
            (net.zero_grad if zero_all else opt.zero_grad)()
        return grads

    seen = []

    class BodyGrad(Callback):
        reads = ("model",)

        def after_backward(self, learner):
            seen.append(learner.model[0].weight.grad.clone())

    cleared, summed = hand_written(zero_all=True), hand_written(zero_all=False)
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=[BodyGrad()]).fit(1)
    assert model[0].weight.grad is None
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, cleared))
    assert torch.allclose(summed[2], seen[0] + seen[1] + seen[2], rtol=1e-6)  # what torch's zero_grad leaves


def test_a_resume_restores_the_norm_layers_a_freezing_helper_held_or_released():
    # set_trainable(..., False) holds the backbone's BatchNorm in eval; the run unfreezes it with
    # set_trainable(..., True), which releases it. The script that builds the resumed learner freezes it again:
    # the checkpoint's "frozen" entry must release it again, or its running statistics stop moving.
    from loopkit.param_groups import set_trainable
    from loopkit.resume.frozen import norms_held_in_eval

    class Release(Callback):
        reads = ("epoch",)
        writes = ("optimizer.param_groups",)

        def __init__(self, backbone):
            self.backbone = backbone

        def before_epoch(self, learner):
            if learner.epoch == 1 and not holds(learner.optimizer, list(self.backbone.parameters())):
                set_trainable([self.backbone], True)
                learner.optimizer.add_param_group({"params": list(self.backbone.parameters()), "lr": 0.01})

    def run(resume_from=None, snapshot=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8)), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )
        set_trainable([model[0]], False)
        g = torch.Generator().manual_seed(1)
        data = [(torch.randn(6, 4, generator=g), torch.randn(6, 1, generator=g)) for _ in range(4)]
        opt = torch.optim.SGD(model[2].parameters(), lr=0.05)
        callbacks = [Release(model[0]), *([snapshot] if snapshot else [])]
        Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=callbacks).fit(3, resume_from=resume_from)
        return model

    snap = Snapshot(at_step=6)  # epoch 1, after the release
    straight = run(snapshot=snap)
    assert snap.state["frozen"] == {"parameters": [], "norms": []}
    resumed = run(resume_from=snap.state)
    assert norms_held_in_eval(resumed) == []
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # running_mean and running_var included


def test_a_per_epoch_rate_schedule_resumes_a_group_added_mid_epoch_exactly():
    # Resumed mid-epoch, the epoch's before_epoch runs again, and a per-epoch Scheduler (bound to the optimizer
    # with the re-added group) writes the group at value * (x / value), which is not x in the last bit (float64
    # here). The optimizer's options come back from the checkpoint after the callbacks' states.
    def run(resume_from=None, snapshot=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        g = torch.Generator().manual_seed(1)
        data = [(torch.randn(6, 4, generator=g).double(), torch.randn(6, 1, generator=g).double()) for _ in range(8)]

        class AddMidEpoch(Callback):
            reads = ("global_step",)
            writes = ("optimizer.param_groups",)

            def after_batch(self, learner):
                params = list(learner.model[0].parameters())
                if learner.phase == "train" and learner.global_step == 3 and not holds(learner.optimizer, params):
                    learner.optimizer.add_param_group({"params": params, "lr": 0.007})

        opt = torch.optim.SGD(model[2].parameters(), lr=0.05)
        scheduler = Scheduler({LearningRate: Schedule([0, 3], [0.05, 0.05])}, per="epoch")
        lrs = Lrs()
        callbacks = [scheduler, AddMidEpoch(), lrs, *([snapshot] if snapshot else [])]
        Learner(model, data, opt, torch.nn.functional.mse_loss, callbacks=callbacks).fit(3, resume_from=resume_from)
        return model, lrs.seen

    assert 0.05 * (0.007 / 0.05) != 0.007  # the write that a resume must not leave in place
    snap = Snapshot(at_step=5)  # epoch 0 (8 batches), after the group joined at step 3
    (straight, lrs_a), (resumed, lrs_b) = run(snapshot=snap), run(resume_from=snap.state)
    assert lrs_b == lrs_a[5:]  # the lr of every step after the checkpoint, to the bit
    assert lrs_b[0] == [0.05, 0.007]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
