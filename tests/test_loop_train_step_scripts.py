"""What real training scripts do, each against the hand-written loop it replaces, bit for bit (issue 25).

Clipping in ``model.parameters()`` order, closure optimizers (LBFGS), ``valid_every`` under accumulation,
validation state, ``validate(name=...)`` and a model that computes its own loss.
"""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner, Metrics
from loopkit.callbacks import GradientAccumulation, GradientClip, MixedPrecision

MSE = torch.nn.functional.mse_loss


def _data(n_batches=6, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(n, 4, generator=g)
        out.append((x, x @ torch.tensor([[1.0], [-1.0], [0.5], [2.0]]) + 0.1 * torch.randn(n, 1, generator=g)))
    return out


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _twins(seed=0):
    a = _model(seed)
    b = _model(seed)
    return a, b


def _decay_groups(model):
    """nanoGPT's AdamW groups: matrices decay, vectors do not; the group order is not model.parameters() order."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01
    )


def _equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


class LossLog:
    reads = ("step_loss", "phase")

    def __init__(self):
        self.losses = []

    def after_step(self, learner):
        self.losses.append(learner.step_loss.detach().clone())


# ------------------------------------------------------------------------------------------ clipping order
def test_clipping_sums_the_norm_in_model_parameters_order_like_a_hand_written_loop():
    data = _data(8)
    model, twin = _twins()
    log = LossLog()
    Learner(model, data, _decay_groups(model), MSE, callbacks=[GradientClip(max_norm=0.05), log]).fit(3)
    opt, hand = _decay_groups(twin), []
    for _ in range(3):
        for xb, yb in data:
            loss = MSE(twin(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.05)  # nanoGPT's clip
            opt.step()
            opt.zero_grad(set_to_none=True)
            hand.append(loss.detach())
    assert all(torch.equal(a, b) for a, b in zip(log.losses, hand)) and len(hand) == 24
    assert _equal(model, twin)


def test_clipping_only_the_named_parameters_equals_clipping_them_by_hand():
    data = _data(6)
    model, twin = _twins(1)
    clip = GradientClip(max_norm=0.01, parameters=["2.weight", "0.bias"])
    Learner(model, data, _decay_groups(model), MSE, callbacks=[clip]).fit(2)
    opt = _decay_groups(twin)
    for _ in range(2):
        for xb, yb in data:
            MSE(twin(xb), yb).backward()
            torch.nn.utils.clip_grad_norm_([twin[2].weight, twin[0].bias], 0.01)
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert _equal(model, twin)


def test_clipping_names_that_are_not_parameters_are_refused_when_the_learner_is_built():
    model = _model()
    with pytest.raises(ValueError, match=r"names \['2.wieght'\].*model.named_parameters\(\)"):
        Learner(model, _data(), _decay_groups(model), MSE, callbacks=[GradientClip(1.0, parameters=["2.wieght"])])
    with pytest.raises(ValueError, match="needs a list of parameter names"):
        GradientClip(1.0, parameters="2.weight")


# ------------------------------------------------------------------------------------------ LBFGS
class Counted(torch.nn.Module):
    """Counts its forward passes: the closure evaluations of a step."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _hand_lbfgs(model, data, epochs, clip=None):
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=20)
    losses = []
    for _ in range(epochs):
        for xb, yb in data:

            def closure(xb=xb, yb=yb):
                opt.zero_grad()
                loss = MSE(model(xb), yb)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                return loss

            losses.append(opt.step(closure))
    return losses


class Events:
    reads = ("phase",)

    def __init__(self):
        self.seen = {}

    def _count(self, event):
        self.seen[event] = self.seen.get(event, 0) + 1

    def after_loss(self, learner):
        self._count("after_loss")

    def before_backward(self, learner):
        self._count("before_backward")

    def after_step(self, learner):
        self._count("after_step")


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_lbfgs_evaluates_the_closure_as_often_as_a_hand_written_loop_and_ends_bit_identical(clip):
    data = _data(3)
    model, twin = Counted(_model(2)), Counted(_model(2))
    events, log = Events(), LossLog()
    callbacks = [events, log] + ([GradientClip(max_norm=clip)] if clip is not None else [])
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=20)
    Learner(model, data, opt, MSE, callbacks=callbacks).fit(2)
    hand = _hand_lbfgs(twin, data, 2, clip)
    assert model.calls == twin.calls  # the closure is the only forward: 20 a step, not 21
    assert all(torch.equal(a, b) for a, b in zip(log.losses, hand))
    assert _equal(model, twin)
    # Gradient callbacks run inside every evaluation; the loss events once a step, on the first evaluation.
    assert events.seen["before_backward"] == model.calls
    assert events.seen["after_loss"] == events.seen["after_step"] == 6


def test_lbfgs_clipping_takes_effect():
    data = _data(2)
    clipped, free = Counted(_model(3)), Counted(_model(3))
    for model, callbacks in ((clipped, [GradientClip(max_norm=1e-6)]), (free, [])):
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
        Learner(model, data, opt, MSE, callbacks=callbacks).fit(1)
    assert not _equal(clipped, free)


@pytest.mark.parametrize(
    "callback, match",
    [(GradientAccumulation(2), r"gradient accumulation \(k=2\)"), (MixedPrecision(torch.float16), "GradScaler")],
)
def test_lbfgs_refuses_what_a_closure_cannot_do(callback, match):
    model = _model()
    opt = torch.optim.LBFGS(model.parameters())
    with pytest.raises(ValueError, match=match):
        Learner(model, _data(), opt, MSE, callbacks=[callback]).fit(1)


# ------------------------------------------------------------------------------------------ valid_every
def test_valid_every_that_is_not_whole_optimizer_steps_is_refused_under_accumulation():
    model = _model()
    learner = Learner(
        model, _data(), torch.optim.SGD(model.parameters(), lr=0.1), MSE, callbacks=[GradientAccumulation(3)]
    )
    with pytest.raises(ValueError, match=r"valid_every=10.*k=3.*valid_every=9"):
        learner.fit(2, valid_every=10)


def test_valid_every_in_whole_windows_validates_after_every_window_group():
    model = _model()
    valid_at = []

    class WhenValid:
        reads = ("global_step",)

        def after_valid(self, learner):
            valid_at.append(learner.global_step)

    learner = Learner(
        model,
        _data(5),
        torch.optim.SGD(model.parameters(), lr=0.1),
        MSE,
        valid_data=_data(1, seed=1),
        callbacks=[GradientAccumulation(3), WhenValid()],
    )
    learner.fit(4, valid_every=6)  # 6 micro-batches of a 5-batch stream: 2 optimizer steps a loop epoch
    assert valid_at == [2, 4, 6, 8]


# ------------------------------------------------------------------------------------------ validation state
def test_before_and_after_valid_run_without_gradients_in_fit_and_in_validate():
    seen = []

    class GradState:
        reads = ("phase",)

        def before_valid(self, learner):
            seen.append(("before_valid", torch.is_grad_enabled()))

        def after_valid(self, learner):
            seen.append(("after_valid", torch.is_grad_enabled()))

    model = _model()
    data = _data(2)
    learner = Learner(
        model, data, torch.optim.SGD(model.parameters(), lr=0.1), MSE, valid_data=data, callbacks=[GradState()]
    )
    learner.fit(1)
    learner.validate()
    assert seen == [("before_valid", False), ("after_valid", False)] * 2
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------------------------------ evaluation names
def test_validate_reports_under_the_name_the_user_chooses():
    data, test = _data(4), _data(3, seed=5)
    model = _model()
    metrics = Metrics(lambda pred, y: (pred - y).abs().mean(), names=["mae"])
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.05), MSE, callbacks=[metrics])
    learner.fit(1)
    result = learner.validate(test, name="test")
    with torch.no_grad():  # by hand: sample-weighted means over the test batches
        n = sum(len(y) for _, y in test)
        loss = sum(MSE(model(x), y).double() * len(y) for x, y in test) / n
        mae = sum((model(x) - y).abs().mean().double() * len(y) for x, y in test) / n
    assert sorted(result) == ["test_loss", "test_mae"]
    assert result["test_loss"] == pytest.approx(loss.item(), rel=1e-12)
    assert result["test_mae"] == pytest.approx(mae.item(), rel=1e-6)  # float32 terms, float64 sum
    with pytest.raises(ValueError, match="validate\\(name='train'\\)"):
        learner.validate(test, name="train")


# ------------------------------------------------------------------------------------------ the model's own loss
class OwnLoss(torch.nn.Module):
    """nanoGPT's contract: forward(x, targets) returns (prediction, loss)."""

    def __init__(self, seed):
        super().__init__()
        self.net = _model(seed)

    def forward(self, x, targets=None):
        pred = self.net(x)
        return pred, (None if targets is None else MSE(pred, targets))


def test_a_model_that_computes_its_own_loss_needs_no_loss_fn():
    data = _data(5)
    model, twin = OwnLoss(4), OwnLoss(4)
    log = LossLog()
    learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.05), callbacks=[log])
    learner.fit(2)
    opt, hand = torch.optim.SGD(twin.parameters(), lr=0.05), []
    for _ in range(2):
        for xb, yb in data:
            _, loss = twin(xb, yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            hand.append(loss.detach())
    assert all(torch.equal(a, b) for a, b in zip(log.losses, hand)) and len(log.losses) == 10
    assert _equal(model, twin)
    preds = learner.predict([x for x, _ in data[:2]])  # inputs alone: model(x), its prediction's first element
    assert isinstance(preds, list) and torch.equal(preds[0][0], twin(data[0][0])[0])


def test_a_model_output_without_a_loss_is_refused_with_the_fix():
    model = _model()
    with pytest.raises(TypeError, match=r"no loss_fn was given.*Sequential.forward takes one input; pass a loss_fn"):
        Learner(model, _data(), torch.optim.SGD(model.parameters(), lr=0.1))

    class NoLoss(torch.nn.Module):  # takes the targets but returns no loss
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x, y=None):
            return self.net(x)

    model = NoLoss()
    with pytest.raises(TypeError, match=r"no loss_fn.*\(logits, loss\); got Tensor"):
        Learner(model, _data(), torch.optim.SGD(model.parameters(), lr=0.1)).fit(1)


# ------------------------------------------------------------------------------------------ recurrent state
class WordModel(torch.nn.Module):
    """pytorch/examples' word language model in small: (seq_len, batch) input, an LSTM state carried along."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.rnn, self.out = torch.nn.Embedding(10, 6), torch.nn.LSTM(6, 8), torch.nn.Linear(8, 10)

    def init_hidden(self, bsz):
        return torch.zeros(1, bsz, 8), torch.zeros(1, bsz, 8)

    def forward(self, x, hidden):
        y, hidden = self.rnn(self.embed(x), hidden)
        return self.out(y).view(-1, 10), hidden


def _word_batches(n_batches, seed):
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, 10, (n_batches * 5 + 1, 3), generator=g)  # batchify: 3 columns
    return [(stream[i : i + 5], stream[i + 1 : i + 6].reshape(-1)) for i in range(0, n_batches * 5, 5)]


def test_a_recurrent_state_carried_across_batches_and_fresh_each_phase_equals_the_script():
    from loopkit.loop.step import RecurrentStep

    train, valid = _word_batches(4, 0), _word_batches(2, 1)
    ce = torch.nn.functional.cross_entropy
    model, twin = WordModel(5), WordModel(5)
    metrics = Metrics()
    step = RecurrentStep(model.init_hidden, batch_dim=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    Learner(model, train, opt, ce, valid_data=valid, step=step, callbacks=[metrics]).fit(2)
    opt2, valid_losses = torch.optim.SGD(twin.parameters(), lr=0.5), []
    for _ in range(2):
        twin.train()
        hidden = twin.init_hidden(3)
        for xb, yb in train:
            hidden = tuple(h.detach() for h in hidden)  # repackage_hidden
            out, hidden = twin(xb, hidden)
            ce(out, yb).backward()
            opt2.step()
            opt2.zero_grad()
        twin.eval()
        hidden, total = twin.init_hidden(3), 0.0
        with torch.no_grad():
            for xb, yb in valid:
                out, hidden = twin(xb, hidden)
                total += ce(out, yb).double().item() * len(yb)
        valid_losses.append(total / sum(len(y) for _, y in valid))
    assert _equal(model, twin)
    assert [row["valid_loss"] for row in metrics.history] == pytest.approx(valid_losses, rel=1e-12)


def test_a_recurrent_state_is_in_checkpoints_so_a_resume_mid_epoch_equals_the_whole_run(tmp_path):
    # The word language model killed after batch 3 of 4: the resumed run's batch 4 must start from the hidden
    # state batch 3 left, as the script's uninterrupted loop does (a fresh state there changes the weights).
    from loopkit import Checkpoint, CheckpointError, Step, load_checkpoint
    from loopkit.loop.step import RecurrentStep

    train, valid = _word_batches(4, 0), _word_batches(2, 1)
    ce = torch.nn.functional.cross_entropy

    def learner(callbacks, step=None):
        model = WordModel(5)
        step = step or RecurrentStep(model.init_hidden, batch_dim=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        return Learner(model, train, opt, ce, valid_data=valid, step=step, callbacks=callbacks)

    whole = learner([Metrics()])
    whole.fit(2)
    checkpoint = Checkpoint(tmp_path, every_n_steps=3, every_epoch=False, keep_last=5)
    learner([Metrics(), checkpoint]).fit(1)
    mid = str(tmp_path / "step-000000003.pt")
    saved = load_checkpoint(mid)
    assert saved["position"]["batch"] == 3 and saved["step"]["ranks"][0]["hidden"] is not None
    resumed = learner([Metrics()])
    resumed.fit(2, resume_from=mid)
    assert _equal(resumed.model, whole.model)  # bit for bit
    assert resumed.callbacks[0].history == whole.callbacks[0].history
    with pytest.raises(CheckpointError, match=r"cannot take it \(it has no load_state_dict\)"):
        learner([Metrics()], step=Step()).fit(2, resume_from=mid)
