"""The step's callbacks against hand-written loops: accumulation, mixed precision, clipping, skipped steps."""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import CancelBatch, Learner, Metrics, Schedule, Scheduler
from loopkit.callbacks import ClipThreshold, GradientAccumulation, GradientClip, MixedPrecision


def _data(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = torch.randn(n, 4, generator=g)
        out.append((x, x @ torch.tensor([[1.0], [-1.0], [0.5], [2.0]]) + 0.1 * torch.randn(n, 1, generator=g)))
    return out


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _assert_same(a, b, rtol=0.0, atol=0.0):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------ accumulation
def _hand_accumulation(model, data, k, epochs, drop=()):
    """Sample-weighted accumulation over windows of k batches (shorter at the epoch's end), written out."""
    opt = _sgd(model)
    for _ in range(epochs):
        windows = [list(range(i, min(i + k, len(data)))) for i in range(0, len(data), k)]
        for window in windows:
            total = sum(len(data[i][1]) for i in window)
            for i in window:
                xb, yb = data[i]
                (torch.nn.functional.mse_loss(model(xb), yb) * (len(yb) / total)).backward()
            opt.step()
            opt.zero_grad()
    return model


def test_accumulation_equals_a_hand_written_loop_bit_for_bit():
    data = _data([8] * 10)  # 10 batches, k=4: windows of 4, 4 and a remainder of 2
    model, twin = _model(), _model()
    learner = Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(4)])
    learner.fit(2)
    assert learner.global_step == 6
    # Equal micro-batches: backward on loss/4; the remainder is rescaled by 2, a power of two: exact.
    _assert_same(model, _hand_accumulation(twin, data, 4, 2))


def test_accumulation_with_unequal_micro_batches_is_the_sample_weighted_mean():
    data = _data([8, 8, 5, 8, 3, 8, 8])
    model, twin = _model(), _model()
    Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(3)]).fit(2)
    # One rescale of the gradient by 24/N: a float32 rounding per element, then SGD amplifies it a little.
    _assert_same(model, _hand_accumulation(twin, data, 3, 2), rtol=1e-5, atol=1e-6)


def test_accumulation_step_loss_is_the_window_mean():
    data = _data([8, 4, 8, 8])
    model = _model()
    losses, step_losses = [], []

    class Spy:
        reads = ("loss", "step_loss", "yb")  # declaring step_loss makes GradientAccumulation compute it

        def after_loss(self, learner):
            losses.append((learner.loss.item(), len(learner.yb)))

        def after_step(self, learner):
            step_losses.append(learner.step_loss.item())

    Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(2), Spy()]).fit(1)
    expected = [sum(v * n for v, n in losses[i : i + 2]) / sum(n for _, n in losses[i : i + 2]) for i in range(0, 4, 2)]
    assert step_losses == pytest.approx(expected, rel=1e-6)


def test_a_cancel_inside_a_window_discards_the_window():
    data = _data([8] * 8)
    model, twin = _model(), _model()

    class CancelThird:
        reads = ("batch_idx",)

        def after_backward(self, learner):
            if learner.batch_idx == 2:  # micro-batch 3 of the first window of 4, after its backward
                raise CancelBatch

    learner = Learner(
        model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(4), CancelThird()]
    )
    learner.fit(1)
    # Reference: batches 0-2 are dropped; windows restart at batch 3: [3, 4, 5, 6], then [7] (epoch end).
    opt = _sgd(twin)
    for window in ([3, 4, 5, 6], [7]):
        for i in window:
            xb, yb = data[i]
            (torch.nn.functional.mse_loss(twin(xb), yb) * (8 / (8 * len(window)))).backward()
        opt.step()
        opt.zero_grad()
    assert learner.global_step == 2
    _assert_same(model, twin)


def test_data_without_length_steps_on_the_remainder_window():
    data = _data([8] * 6)

    class Stream:
        def __iter__(self):
            return iter(data)

    model, twin = _model(), _model()
    learner = Learner(model, Stream(), _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(4)])
    learner.fit(1)
    assert learner.global_step == 2
    _assert_same(model, _hand_accumulation(twin, data, 4, 1))


def test_checkpoints_only_at_window_boundaries():
    data = _data([8] * 4)
    model = _model()
    states = []

    class Save:
        reads = ("micro_batch",)
        run_after = ("*",)

        def after_batch(self, learner):
            if learner.micro_batch:
                with pytest.raises(RuntimeError, match="accumulation window's boundary"):
                    learner.state_dict()
            else:
                states.append(learner.state_dict())

    Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[GradientAccumulation(2), Save()]).fit(1)
    assert [s["position"]["batch"] for s in states] == [2, 4]


def test_accumulation_rejects_bad_k():
    with pytest.raises(ValueError, match="k=0"):
        GradientAccumulation(0)


# ------------------------------------------------------------------------------------------ mixed precision
def test_bf16_autocast_equals_a_hand_written_autocast_loop():
    data = _data([8] * 6)
    model, twin = _model(), _model()
    metrics = Metrics()
    Learner(
        model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[MixedPrecision(torch.bfloat16), metrics]
    ).fit(2)
    opt = _sgd(twin)
    losses = []
    for _ in range(2):
        for xb, yb in data:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(twin(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    _assert_same(model, twin)
    assert metrics.history[1]["train_loss"] == pytest.approx(sum(losses[6:]) / 6, rel=1e-6)


def _hand_fp16(model, data, epochs, scaler):
    opt = _sgd(model)
    losses, steps = [], 0
    for _ in range(epochs):
        losses.append([])
        for xb, yb in data:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.mse_loss(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            before = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            if scaler.get_scale() >= before:  # not skipped
                losses[-1].append(loss.item())
                steps += 1
    return losses, steps


def test_fp16_with_grad_scaler_equals_torchs_recipe_including_skipped_steps():
    data = _data([8] * 6)
    data[2] = (data[2][0] * 1e4, data[2][1] * 1e4)  # gradients overflow float16's range under the scale
    model, twin = _model(), _model()
    metrics = Metrics()
    mp = MixedPrecision(torch.float16, init_scale=2.0**16)
    learner = Learner(
        model,
        data,
        _sgd(model),
        torch.nn.functional.mse_loss,
        callbacks=[mp, GradientClip(max_norm=1.0), metrics],
    )
    learner.fit(2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    losses, steps = _hand_fp16(twin, data, 2, scaler)
    _assert_same(model, twin)
    assert mp.skipped >= 1 and learner.skipped_steps == mp.skipped
    assert learner.global_step == steps == 12 - mp.skipped
    assert mp.scaler.get_scale() == scaler.get_scale()
    # The logged loss is the true, unscaled loss of the steps that happened.
    for epoch in range(2):
        assert metrics.history[epoch]["train_loss"] == pytest.approx(sum(losses[epoch]) / len(losses[epoch]), rel=1e-6)


def test_fp16_resume_is_exact_and_carries_the_scaler():
    data = _data([8] * 5)
    data[1] = (data[1][0] * 1e4, data[1][1] * 1e4)
    states = {}

    class Grab:
        reads = ("global_step", "micro_batch")
        run_after = ("*",)

        def after_batch(self, learner):
            if learner.phase == "train" and learner.epoch == 1 and learner.batch_idx == 2:
                states["mid"] = copy.deepcopy(learner.state_dict())

    def run(callbacks, resume=None):
        model = _model()
        learner = Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=callbacks)
        learner.fit(3, resume_from=resume)
        return model, learner

    full, full_learner = run([MixedPrecision(torch.float16), Grab()])
    mp = MixedPrecision(torch.float16)
    resumed, _ = run([mp], resume=states["mid"])
    _assert_same(full, resumed)
    assert mp.scaler.get_scale() == full_learner.callback(MixedPrecision).scaler.get_scale()
    assert states["mid"]["callbacks"]["MixedPrecision"]["scaler"]["scale"] < 2.0**16  # a skip backed it off


def test_mixed_precision_rejects_other_dtypes():
    with pytest.raises(ValueError, match=r"torch\.float32"):
        MixedPrecision(torch.float32)


# ------------------------------------------------------------------------------------------ clipping
@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipping_equals_torchs_clip_functions(mode):
    data = _data([8] * 5)
    data = [(x * 5, y * 5) for x, y in data]  # large gradients, so clipping acts
    model, twin = _model(), _model()
    clip = GradientClip(max_norm=0.5) if mode == "norm" else GradientClip(max_value=0.05)
    norms = []

    class ReadNorm:
        run_after = ("GradientClip",)

        def after_step(self, learner):
            norms.append(clip.norm)

    Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[clip, ReadNorm()]).fit(1)
    opt = _sgd(twin)
    expected = []
    for xb, yb in data:
        torch.nn.functional.mse_loss(twin(xb), yb).backward()
        if mode == "norm":
            expected.append(torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5))
        else:
            torch.nn.utils.clip_grad_value_(twin.parameters(), 0.05)
        opt.step()
        opt.zero_grad()
    _assert_same(model, twin)
    if mode == "norm":
        assert torch.equal(torch.stack(norms), torch.stack(expected))
        assert all(n > 0.5 for n in expected)  # every step was clipped
    else:
        assert norms == [None] * 5


def test_the_clip_threshold_is_schedulable():
    data = _data([8] * 4)
    data = [(x * 5, y * 5) for x, y in data]
    model, twin = _model(), _model()
    clip = GradientClip(max_norm=1.0)
    schedule = Schedule([0, 1], [1.0, 0.2])
    sched = Scheduler({ClipThreshold: schedule})
    Learner(model, data, _sgd(model), torch.nn.functional.mse_loss, callbacks=[clip, sched]).fit(1)
    thresholds = [1.0 - 0.8 * b / 4 for b in range(4)]  # linear from 1.0 to 0.2 over the epoch
    assert sched.history["clip"] == pytest.approx(thresholds, rel=1e-12)
    opt = _sgd(twin)
    for (xb, yb), threshold in zip(data, thresholds):
        torch.nn.functional.mse_loss(twin(xb), yb).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), threshold)
        opt.step()
        opt.zero_grad()
    _assert_same(model, twin)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({}, "exactly one"), ({"max_norm": 1.0, "max_value": 1.0}, "exactly one"), ({"max_norm": -1}, "max_norm=-1")],
)
def test_clip_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientClip(**kwargs)


def test_clip_threshold_needs_a_clip_callback():
    model = _model()
    with pytest.raises(ValueError, match="no GradientClip"):
        Learner(
            model,
            _data([8]),
            _sgd(model),
            torch.nn.functional.mse_loss,
            callbacks=[Scheduler({ClipThreshold: Schedule([0, 1], [1.0, 0.2])})],
        )
