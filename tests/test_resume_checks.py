"""A checkpoint that does not fit is refused before anything is touched; a resume never silently does nothing;
a checkpoint belongs to the model, not to its wrapper."""

from __future__ import annotations

import copy
import os
import shutil
import warnings

import pytest
import torch

from loopkit import Callback, Checkpoint, Learner, Scheduler, onecycle
from loopkit.optim import FusedAdamW
from loopkit.resume.file import CheckpointError, load_checkpoint
from loopkit.scheduling.optimizer_hyperparams import LearningRate

from .test_resume import LossLog, Snapshot, assert_identical, make_run, run_resumed, run_straight

MSE = torch.nn.functional.mse_loss


def fresh_learner(model=None, optimizer=None, callbacks=(), seed=7):
    m, loader, valid, _opt = make_run(seed=seed)
    model = model if model is not None else m
    optimizer = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Learner(model, loader, optimizer, MSE, valid_data=valid, callbacks=list(callbacks))


def snapshot_of(learner):
    """Everything a refused resume must leave as it was."""
    return (
        copy.deepcopy(learner.model.state_dict()),
        copy.deepcopy(learner.optimizer.state_dict()),
        learner.global_step,
        learner.position,
        learner.n_epochs,
        torch.get_rng_state(),
    )


def assert_untouched(before, learner):
    after = snapshot_of(learner)
    for (ka, a), (kb, b) in zip(before[0].items(), after[0].items()):
        assert ka == kb and torch.equal(a, b), ka
    assert before[1] == after[1]  # the optimizer still has no state and its original lr
    assert before[2:5] == after[2:5]
    assert torch.equal(before[5], after[5])


@pytest.fixture(scope="module")
def mid_epoch_state():
    return run_straight(2, at_step=8)[3]  # epoch 1, 2 of its 6 batches done


# ------------------------------------------------------------------------------------- refused up front
def test_a_layer_of_another_shape_is_refused_before_any_layer_is_loaded(mid_epoch_state):
    state = copy.deepcopy(mid_epoch_state)
    state["model"]["3.weight"] = torch.zeros(2, 32)  # the last layer, after layers that do match
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match=r"'3.weight' has shape \(2, 32\) in the checkpoint, \(1, 32\)"):
        learner.fit(2, resume_from=state)
    assert_untouched(before, learner)


def test_missing_and_unexpected_model_keys_are_named(mid_epoch_state):
    state = copy.deepcopy(mid_epoch_state)
    state["model"]["extra.weight"] = state["model"].pop("0.bias")
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match=r"'0\.bias' are not in the checkpoint") as info:
        learner.fit(2, resume_from=state)
    assert "'extra.weight' are not in the model" in str(info.value)
    assert_untouched(before, learner)


@pytest.mark.parametrize("entry", ["rng", "optimizer", "position", "callbacks", "model", "optimizer_type"])
def test_a_checkpoint_missing_an_entry_is_refused_naming_it(mid_epoch_state, entry):
    state = copy.deepcopy(mid_epoch_state)
    del state[entry]
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match=f"lacks the entries \\['{entry}'\\]"):
        learner.fit(2, resume_from=state)
    assert_untouched(before, learner)


def test_a_damaged_rng_entry_is_refused(mid_epoch_state):
    state = copy.deepcopy(mid_epoch_state)
    del state["rng"]["ranks"][0]["now"]["numpy"]
    state["rng"]["ranks"][0]["phase_start"] = None  # mid-epoch: needed to replay the shuffle
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match="rng of rank 0 has no 'numpy'") as info:
        learner.fit(2, resume_from=state)
    assert "rng at the phase start of rank 0" in str(info.value)
    assert_untouched(before, learner)


def test_a_schedule_of_another_length_is_refused_before_model_and_optimizer_load():
    def learner_with_scheduler(seed):
        m, loader, _valid, opt = make_run(seed=seed)
        sched = Scheduler({LearningRate: onecycle(3, 0.05)})
        return Learner(m, loader, opt, MSE, callbacks=[sched, Snapshot(at_step=8)])

    run = learner_with_scheduler(0)
    run.fit(3)
    state = run.callback(Snapshot).state
    learner = learner_with_scheduler(5)
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match=r"laid out for \(3, 6\)") as info:
        learner.fit(4, resume_from=state)  # onecycle(3) cannot fill 4 epochs either, but the mismatch comes first
    assert "callback Scheduler cannot take its state" in str(info.value)
    assert_untouched(before, learner)
    assert learner.callback(Scheduler).history == {"lr": []}


def test_an_adamw_checkpoint_is_refused_by_an_sgd_learner_naming_both():
    m, loader, _valid, _ = make_run()
    snap = Snapshot(at_step=3)
    Learner(m, loader, torch.optim.AdamW(m.parameters(), lr=1e-3), MSE, callbacks=[snap]).fit(1)
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(
        CheckpointError, match=r"torch\.optim\.adamw\.AdamW optimizer and this learner's is a torch\.optim\.sgd\.SGD"
    ):
        learner.fit(1, resume_from=snap.state)
    assert_untouched(before, learner)


def test_a_torch_adamw_checkpoint_resumes_into_fused_adamw():
    # Their state layouts are the same by design (docs/optim.md), so this move is allowed and continues.
    m, loader, _valid, _ = make_run()
    snap = Snapshot(at_step=3)
    Learner(m, loader, torch.optim.AdamW(m.parameters(), lr=1e-3), MSE, callbacks=[snap]).fit(1)
    m2, loader2, _, _ = make_run(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the reference implementation runs": no CUDA here
        opt = FusedAdamW(m2.parameters(), lr=1e-3)
        learner = Learner(m2, loader2, opt, MSE)
        learner.fit(1, resume_from=snap.state)
    assert learner.global_step == 6 and int(opt.state[m2[0].weight]["step"]) == 6


def test_a_different_param_group_layout_is_refused(mid_epoch_state):
    m, loader, _valid, _ = make_run(seed=2)
    opt = torch.optim.SGD([{"params": m[0].parameters()}, {"params": m[3].parameters(), "lr": 0.01}], lr=0.05)
    learner = Learner(m, loader, opt, MSE)
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match="has 2 param groups, the checkpoint 1"):
        learner.fit(2, resume_from=mid_epoch_state)
    assert_untouched(before, learner)


def test_a_stateful_callback_without_state_in_the_checkpoint_is_refused(mid_epoch_state):
    learner = fresh_learner(callbacks=[Scheduler({LearningRate: onecycle(2, 0.05)})])
    before = snapshot_of(learner)
    with pytest.raises(CheckpointError, match="holds no state for callback Scheduler"):
        learner.fit(2, resume_from=mid_epoch_state)
    assert_untouched(before, learner)


# --------------------------------------------------------------------------- the position against the fit
# 90 samples in batches of 16: 6 train batches per epoch. Steps 1..6 are epoch 0, 13..18 epoch 2.
def test_at_the_end_of_the_fit_is_an_error_saying_nothing_would_be_trained():
    state = run_straight(3, at_epoch=2)[3]  # after 3 complete epochs
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(
        CheckpointError,
        match="after 3 complete epochs, the end of this fit of n_epochs=3: resuming would train nothing",
    ):
        learner.fit(3, resume_from=state)
    assert_untouched(before, learner)


def test_at_the_end_of_a_shorter_fit_continues_into_a_longer_one():
    straight = run_straight(4, at_epoch=2)
    assert_identical(straight, run_resumed(4, straight[3]))


@pytest.mark.parametrize("n_epochs", [3, 2])
def test_past_the_end_is_an_error_that_says_so(n_epochs):
    # The case: a checkpoint in epoch 3 (from 0) of a longer run, resumed with fit(3), trained nothing.
    state = run_straight(5, at_step=20)[3]  # epoch 3, 2 batches done
    learner = fresh_learner()
    before = snapshot_of(learner)
    with pytest.raises(
        CheckpointError,
        match=f"in epoch 3 \\(counting from 0\\) after 2 of its train batches, past the end of this fit of n_epochs={n_epochs}",
    ):
        learner.fit(n_epochs, resume_from=state)
    assert_untouched(before, learner)


@pytest.mark.parametrize("at_step", [17, 18, 13])  # just before the end, after the last train batch, epoch start
def test_inside_the_last_epoch_finishes_the_run_exactly(at_step):
    straight = run_straight(3, at_step=at_step)
    resumed = run_resumed(3, straight[3])
    assert_identical(straight, resumed)
    # The resumed run did the rest of the work: the last epoch's valid loss and the remaining train losses.
    done_in_resumed = len(resumed[2].losses) - len(straight[3]["callbacks"]["LossLog"]["losses"])
    assert done_in_resumed == (18 - at_step) + 2  # the remaining train batches and the 2 valid batches


def test_a_mid_epoch_checkpoint_beyond_the_data_is_refused():
    state = run_straight(2, at_step=11)[3]  # epoch 1, 5 batches done
    m, _, _, opt = make_run(seed=1)
    short = [(torch.randn(16, 5), torch.randn(16, 1))] * 4  # 4 batches per epoch now
    learner = Learner(m, short, opt, MSE)
    before = snapshot_of(learner)
    with pytest.raises(
        CheckpointError, match="taken 5 batches into a pass over the train data, which now has 4 batches"
    ):
        learner.fit(2, resume_from=state)
    assert_untouched(before, learner)


# ------------------------------------------------------------------------------------------- wrappers
def wrapped_run(wrap, n_epochs=2, state=None, snap_at=None, seed=0, validate=True):
    m, loader, valid, _ = make_run(seed=seed)
    valid = valid if validate else None
    model = wrap(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    snap, log = Snapshot(at_step=snap_at), LossLog()
    if state is not None:
        torch.manual_seed(999)
    Learner(model, loader, opt, MSE, valid_data=valid, callbacks=[snap, log]).fit(n_epochs, resume_from=state)
    return m, opt, log, snap.state


def compiled(m):
    return torch.compile(m, backend="eager")  # the wrapper is the same for every backend; eager needs no compiler


def data_parallel(m):
    return torch.nn.DataParallel(m)


@pytest.mark.parametrize("wrap", [compiled, data_parallel], ids=["compile", "DataParallel"])
def test_a_checkpoint_moves_between_wrapped_and_unwrapped_models(wrap):
    plain = wrapped_run(lambda m: m, snap_at=8)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in plain[3]["model"])
    # Written wrapped, it holds the plain keys; resumed unwrapped, and the other way round, it continues exactly.
    from_wrapped = wrapped_run(wrap, snap_at=8)
    assert list(from_wrapped[3]["model"]) == list(plain[3]["model"])
    assert_identical(plain, wrapped_run(lambda m: m, state=from_wrapped[3], seed=5))
    assert_identical(plain, wrapped_run(wrap, state=plain[3], seed=5))


def test_torch_compile_with_a_real_backend_round_trips():
    if shutil.which("g++") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile's inductor backend needs a C++ compiler")
    import torch._inductor.config as inductor_config

    plain = wrapped_run(lambda m: m, snap_at=3, n_epochs=1, validate=False)  # one graph to compile, not two
    assert plain[3] is not None
    try:
        # fallback_random: dropout draws from torch's generator, as in eager mode, so the runs are comparable.
        with inductor_config.patch(fallback_random=True):
            resumed = wrapped_run(torch.compile, state=plain[3], n_epochs=1, seed=5, validate=False)
    except Exception as error:  # an inductor that cannot build on this machine is not loopkit's fault
        if "compile" in type(error).__name__.lower() or "inductor" in str(error).lower():
            pytest.skip(f"torch.compile cannot build here: {type(error).__name__}")
        raise
    for p, q in zip(plain[0].parameters(), resumed[0].parameters()):
        # Inductor fuses and reorders float32 arithmetic: 3 steps of SGD differ from eager by a few ulp.
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_distributed_data_parallel_saves_the_module_state(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        plain = wrapped_run(lambda m: m, snap_at=8)
        ddp = wrapped_run(torch.nn.parallel.DistributedDataParallel, snap_at=8)
        assert list(ddp[3]["model"]) == list(plain[3]["model"])
        assert_identical(plain, wrapped_run(lambda m: m, state=ddp[3], seed=5))
        assert_identical(plain, wrapped_run(torch.nn.parallel.DistributedDataParallel, state=plain[3], seed=5))
    finally:
        dist.destroy_process_group()


def test_a_file_checkpoint_from_a_compiled_run_loads_unwrapped(tmp_path):
    m, loader, _, opt = make_run()
    Learner(compiled(m), loader, opt, MSE, callbacks=[Checkpoint(tmp_path)]).fit(1)
    state = load_checkpoint(Checkpoint.latest(tmp_path))
    m2, loader2, _, _ = make_run(seed=4)
    learner = Learner(
        m2,
        loader2,
        torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9),
        MSE,
        callbacks=[Checkpoint(tmp_path / "b")],
    )
    learner.fit(2, resume_from=Checkpoint.latest(tmp_path))
    assert learner.global_step == 12 and set(state["model"]) == set(m2.state_dict())


# ------------------------------------------------------------------------------------- step budgets, windows
def test_a_checkpoint_at_or_past_max_steps_is_an_error_and_one_before_it_finishes_exactly():
    straight = run_straight(3, at_step=10)
    for max_steps, says in [(10, "at the end"), (9, "past the end")]:
        learner = fresh_learner()
        before = snapshot_of(learner)
        with pytest.raises(
            CheckpointError, match=f"after 10 optimizer steps, {says} of this fit's max_steps={max_steps}"
        ):
            learner.fit(max_steps=max_steps, resume_from=straight[3])
        assert_untouched(before, learner)
    m, loader, valid, opt = make_run()
    log = LossLog()
    Learner(m, loader, opt, MSE, valid_data=valid, callbacks=[log]).fit(max_steps=14)
    m2, loader2, valid2, opt2 = make_run(seed=9)
    log2 = LossLog()
    learner = Learner(m2, loader2, opt2, MSE, valid_data=valid2, callbacks=[log2])
    learner.fit(max_steps=14, resume_from=straight[3])
    assert learner.global_step == 14
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))


class AccumulateTwo(Callback):
    """Two micro-batches per optimizer step (the loop's accumulation flag), the way an accumulation callback does."""

    reads = ("batch_idx", "phase")
    writes = ("accumulate",)

    def before_batch(self, learner):
        learner.accumulate = learner.phase == "train" and learner.batch_idx % 2 == 0


def test_checkpoints_are_taken_at_accumulation_window_boundaries_only(tmp_path):
    m, loader, _, opt = make_run()
    ckpt = Checkpoint(tmp_path, every_n_steps=1, every_epoch=False, keep_last=100)
    Learner(m, loader, opt, MSE, callbacks=[AccumulateTwo(), ckpt]).fit(2)
    # 6 micro-batches an epoch in windows of 2: 3 optimizer steps an epoch, each saved once, after its window.
    assert sorted(os.listdir(tmp_path)) == [f"step-{s:09d}.pt" for s in range(1, 7)]
    for step in range(1, 7):
        position = load_checkpoint(tmp_path / f"step-{step:09d}.pt")["position"]
        assert position["global_step"] == step and position["batch"] % 2 == 0
    m2, loader2, _, _ = make_run(seed=4)
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9)
    Learner(m2, loader2, opt2, MSE, callbacks=[AccumulateTwo()]).fit(2, resume_from=tmp_path / "step-000000002.pt")
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))


def test_state_dict_is_refused_inside_an_accumulation_window():
    class TakeMidWindow(Callback):
        reads = ("micro_batch",)

        def after_batch(self, learner):
            if learner.micro_batch:
                learner.state_dict()

    m, loader, _, opt = make_run()
    with pytest.raises(RuntimeError, match="only at an accumulation window's boundary"):
        Learner(m, loader, opt, MSE, callbacks=[AccumulateTwo(), TakeMidWindow()]).fit(1)


def test_a_scheduled_run_with_gradient_accumulation_resumes_exactly(tmp_path):
    from loopkit.callbacks import GradientAccumulation

    def run(seed, resume_from=None, ckpt_dir="a"):
        m, loader, _, opt = make_run(seed=seed)
        callbacks = [
            GradientAccumulation(2),
            Scheduler({LearningRate: onecycle(2, 0.05)}),
            Checkpoint(tmp_path / ckpt_dir, every_n_steps=1, every_epoch=False, keep_last=10),
        ]
        learner = Learner(m, loader, opt, MSE, callbacks=callbacks)
        learner.fit(2, resume_from=resume_from)
        return m, learner.callback(Scheduler).history

    straight = run(0)
    resumed = run(5, resume_from=tmp_path / "a" / "step-000000004.pt", ckpt_dir="b")  # epoch 1, one step in
    assert all(torch.equal(p, q) for p, q in zip(straight[0].parameters(), resumed[0].parameters()))
    assert straight[1] == resumed[1] and len(straight[1]["lr"]) == 6  # 3 optimizer steps an epoch


RANKS_SCRIPT = """
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
def run(rank, d):
    dist.init_process_group("gloo", init_method=f"file://{d}/rendezvous", rank=rank, world_size=2)
    torch.manual_seed(rank)  # per-rank seeds: the ranks' generators differ
    from loopkit import Learner
    m = torch.nn.Linear(2, 1)
    data = [(torch.randn(4, 2), torch.randn(4, 1))] * 3
    learner = Learner(m, data, torch.optim.SGD(m.parameters(), lr=0.1), torch.nn.functional.mse_loss)
    learner.fit(1)
    rng = learner.state_dict()["rng"]
    if rank == 0:
        mine = [torch.get_rng_state()]
        print("RANKS", rng["world_size"], len(rng["ranks"]),
              torch.equal(rng["ranks"][0]["now"]["torch"], mine[0]),
              torch.equal(rng["ranks"][0]["now"]["torch"], rng["ranks"][1]["now"]["torch"]))
    dist.destroy_process_group()
if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1],), nprocs=2)
"""


def test_a_two_rank_checkpoint_holds_every_ranks_rng(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "RANKS 2 2 True False" in out.stdout  # world size 2, rank 0's own state first, rank 1's differs
