"""Two gloo ranks under torchrun, against a hand-written single-process reference.

Each test launches ``tests/distributed_worker.py`` with ``python -m torch.distributed.run`` (``--standalone``
picks a free port) under a hard timeout, so a hang fails the test instead of stalling CI. Launches cost
seconds on a 2-core machine, so each one checks several things.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from sklearn.metrics import f1_score

from tests import distributed_worker as worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120  # seconds for one 2-rank launch; a typical one takes 10-30 s on the 2-core CI machine

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def launch(scenario: str, out, *args: str, nproc: int = 2, timeout: float = TIMEOUT, check: bool = True):
    """Run the worker on ``nproc`` gloo ranks; return the completed process (stdout and stderr together)."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += [os.path.join(ROOT, "tests", "distributed_worker.py"), scenario, str(out), *args]
    done = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{scenario} failed with exit code {done.returncode}:\n{done.stdout[-4000:]}")
    return done


def reference_run():
    """The same training in one process, written by hand: global batch 16, DistributedSampler's shuffle
    (``randperm(n)`` seeded with ``seed + epoch``, seed 0), lr and momentum linear in the epoch position."""
    x, y = worker.data()
    xt, yt, xv, yv = x[: worker.N_TRAIN], y[: worker.N_TRAIN], x[worker.N_TRAIN :], y[worker.N_TRAIN :]
    net = worker.model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    n_batches = worker.N_TRAIN // worker.BATCH
    total = worker.EPOCHS * n_batches
    steps, hparams, history = [], [], []
    step = 0
    for epoch in range(worker.EPOCHS):
        order = torch.randperm(worker.N_TRAIN, generator=torch.Generator().manual_seed(epoch))
        loss_sum = correct = 0.0
        seen, predicted = [], []
        for b in range(n_batches):
            lr = 0.2 + (0.02 - 0.2) * step / total
            momentum = 0.9 + (0.8 - 0.9) * step / total
            for group in opt.param_groups:
                group["lr"], group["momentum"] = lr, momentum
            idx = order[b * worker.BATCH : (b + 1) * worker.BATCH]
            pred = net(xt[idx])
            loss = torch.nn.functional.cross_entropy(pred, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += (pred.argmax(1) == yt[idx]).sum().item()
            seen.append(yt[idx])
            predicted.append(pred.argmax(1))
            steps.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
            hparams.append((lr, momentum))
        with torch.no_grad():
            pred = net(xv)
        history.append(
            {
                "train_loss": loss_sum / worker.N_TRAIN,
                "train_accuracy": correct / worker.N_TRAIN,
                "valid_loss": torch.nn.functional.cross_entropy(pred, yv).item(),
                "valid_accuracy": (pred.argmax(1) == yv).double().mean().item(),
                # macro F1 over the whole phase, from scikit-learn: not an average of per-batch values
                "train_f1": f1_score(torch.cat(seen), torch.cat(predicted), average="macro"),
                "valid_f1": f1_score(yv, pred.argmax(1), average="macro"),
            }
        )
    return steps, hparams, history


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One uninterrupted 2-rank run (shared by the tests below and the resume test's comparison)."""
    out = tmp_path_factory.mktemp("two_ranks")
    launch("train", out)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_ranks_hold_identical_weights_and_hyperparameters_at_every_step(two_ranks):
    _, (r0, r1) = two_ranks
    assert len(r0["steps"]) == len(r1["steps"]) == worker.EPOCHS * worker.N_TRAIN // worker.BATCH
    for k, (a, b) in enumerate(zip(r0["steps"], r1["steps"])):
        assert torch.equal(a, b), f"ranks differ after step {k}"
    assert r0["hparams"] == r1["hparams"]
    assert r0["schedule"] == r1["schedule"]


def test_two_ranks_train_to_the_weights_of_one_process_with_the_same_global_batch(two_ranks):
    _, (r0, _) = two_ranks
    steps, hparams, _ = reference_run()
    # float64 throughout: DDP averages two 8-sample mean gradients where one process takes one 16-sample
    # mean, so the two differ only in summation order, ~1e-16 relative per operation over 18 steps. A real
    # difference (one sample in the wrong batch) moves the weights by ~1e-3.
    for k, (got, want) in enumerate(zip(r0["steps"], steps)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"step {k}")
    assert len(r0["steps"]) == len(steps)
    # The scheduled values every step used, against the hand-computed linear schedule.
    for (lr, momentum), [(got_lr, got_momentum)] in zip(hparams, r0["hparams"]):
        assert got_lr == pytest.approx(lr, rel=1e-12) and got_momentum == pytest.approx(momentum, rel=1e-12)


def test_metrics_are_global_the_same_on_every_rank_and_count_every_validation_sample_once(two_ranks):
    _, (r0, r1) = two_ranks
    _, _, history = reference_run()
    assert r0["metrics"] == r1["metrics"]  # bit for bit: both ranks read the one all-reduced vector
    # 37 validation samples over 2 ranks (19 + 18, no padding): a repeated or missing sample would move
    # valid_loss by ~1/37 of a sample's loss (~1e-2), far beyond the float64 summation-order tolerance.
    # loopkit's accuracy() takes each batch's mean in float32 and torchmetrics' F1 is float32 (rounding ~6e-8
    # relative); the losses are float64. The F1 comes from a torchmetrics object, synced by torchmetrics itself.
    for epoch, (got, want) in enumerate(zip(r0["metrics"], history)):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-10 if "loss" in key else 1e-6), (epoch, key)


def test_one_writer_rank_0_writes_every_file_and_the_learner_gets_its_model_back(two_ranks):
    out, (r0, r1) = two_ranks
    saved = (out / "saves-0.txt").read_text().split()
    assert [os.path.basename(p) for p in saved] == [
        "step-000000004.pt", "epoch-0001.pt", "step-000000008.pt", "step-000000012.pt",
        "epoch-0002.pt", "step-000000016.pt", "epoch-0003.pt",
    ]  # fmt: skip
    assert (out / "saves-1.txt").read_text() == ""  # rank 1 never wrote a checkpoint
    assert sorted(os.listdir(out / "ckpt")) == ["epoch-0002.pt", "epoch-0003.pt", "step-000000016.pt"]  # keep_last=3
    assert len({name.split(".")[-2] for name in os.listdir(out / "tb")}) == 1  # one writing process (by pid)
    assert (out / "bar-1.txt").read_text() == "" and "epoch 2 (3/3)" in (out / "bar-0.txt").read_text()
    assert r0["model_restored"] and r1["model_restored"]


@pytest.fixture(scope="module")
def several(tmp_path_factory):
    """One launch running several short fits one after another in the same process group (see the worker)."""
    out = tmp_path_factory.mktemp("several")
    launch("decisions", out)  # returning at all (within the timeout) means no rank was left hanging
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_decisions_one_rank_takes_alone_are_taken_by_every_rank(several):
    r0, r1 = several
    # NaN: rank 1's loss is NaN at global step 5; NaNGuard on both ranks agrees on it and stops before the step.
    assert r0["nan"]["tripped_at"] == r1["nan"]["tripped_at"] == (0, 5, 5)
    assert len(r0["nan"]["steps"]) == len(r1["nan"]["steps"]) == 5
    assert torch.equal(r0["nan"]["steps"][-1], r1["nan"]["steps"][-1])
    assert bool(r0["nan"]["steps"][-1].isfinite().all())
    # CancelFit raised on rank 1 alone at after_epoch of epoch 0: agreed at that event, both stop after it.
    assert r0["stop"]["epochs"] == r1["stop"]["epochs"] == 1
    assert len(r0["stop"]["steps"]) == len(r1["stop"]["steps"]) == worker.N_TRAIN // worker.BATCH
    # max_time: only rank 1's clock passes the deadline (after step 3); the agreed check stops both there.
    assert len(r0["deadline"]["steps"]) == len(r1["deadline"]["steps"]) == 3
    assert r0["deadline"]["epochs"] == r1["deadline"]["epochs"] == 1  # the phase ends, validation and after_epoch run


def test_a_cancel_one_rank_raises_alone_in_a_batch_is_taken_by_every_rank(several):
    r0, r1 = several
    per_epoch = worker.N_TRAIN // worker.BATCH
    # CancelFit in after_batch on rank 1 alone at step 3: an after-step event is agreed one step late (its
    # collective overlaps the next step), so both ranks stop after step 4, skipping after_epoch.
    for r in (r0, r1):
        assert (len(r["batch_stop"]["steps"]), r["batch_stop"]["global_step"], r["batch_stop"]["epochs"]) == (4, 4, 0)
        # The after_step (Record) and after_batch outcomes rode in the next step's gradient all-reduce (DDP's
        # communication hook): no collective of their own per step; the blocking ones are the phase-level events'
        # (before_fit, before_epoch, before_train).
        assert r["batch_stop"]["collectives_of_their_own"] == {"blocking": 3, "late": 0}
    assert torch.equal(r0["batch_stop"]["steps"][-1], r1["batch_stop"]["steps"][-1])
    # The same under accumulation of 2: raised after step 2 (micro-batch 1 of window 2); the next after_batch is
    # micro-batch 0 of window 3, which has no gradient all-reduce to carry the outcome, so every rank reduces it
    # there (a blocking collective of its own) and both stop at that micro-batch, after step 2.
    for r in (r0, r1):
        stop = r["accum_stop"]
        assert (len(stop["steps"]), stop["global_step"], stop["epochs"]) == (2, 2, 0)
        # The phase-level three, and one at micro-batch 0 of windows 2 and 3 (no gradient all-reduce before it).
        assert stop["collectives_of_their_own"] == {"blocking": 3 + 2, "late": 0}
    assert torch.equal(r0["accum_stop"]["steps"][-1], r1["accum_stop"]["steps"][-1])
    # CancelStep in before_step on rank 1 alone at step 2: every rank skips that step, and no other.
    total = worker.EPOCHS * per_epoch
    for r in (r0, r1):
        assert len(r["step_skip"]["steps"]) == r["step_skip"]["global_step"] == total - 1
    assert all(torch.equal(a, b) for a, b in zip(r0["step_skip"]["steps"], r1["step_skip"]["steps"]))
    # CancelFit in a validation batch on rank 1 alone: carried to the agreed after_valid (whose handlers run on
    # both ranks), then taken by both; the ranks hold different numbers of valid batches, so no per-batch collective.
    for r in (r0, r1):
        assert (len(r["valid_stop"]["steps"]), r["valid_stop"]["epochs"], r["valid_stop"]["valid_ends"]) == (
            per_epoch,
            0,
            1,
        )


def test_a_fully_sharded_model_trains_to_the_weights_of_one_process(several):
    r0, r1 = (ranks["fully_shard"] for ranks in several)
    assert r0["model_is_sharded"].startswith("FSDP")
    steps, _, _ = reference_run()
    assert len(r0["steps"]) == len(steps)
    # Same tolerance argument as for DDP: FSDP2's reduce-scatter averages the two ranks' mean gradients.
    for k, (got, other, want) in enumerate(zip(r0["steps"], r1["steps"], steps)):
        assert torch.equal(got, other), f"ranks differ after step {k}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"step {k}")


def test_an_error_on_one_rank_ends_the_whole_job_with_that_ranks_error(tmp_path):
    start = time.monotonic()
    done = launch("error", tmp_path, check=False)
    # Rank 1 raises at step 3; torchrun sees it exit and tears rank 0 down (which would otherwise fail at its
    # 60 s collective timeout): the job ends, non-zero, with rank 1's error in the output.
    assert done.returncode != 0
    assert "RuntimeError: boom on rank 1 at step 3" in done.stdout
    assert time.monotonic() - start < TIMEOUT
    assert not (tmp_path / "rank0.pt").exists() and not (tmp_path / "rank1.pt").exists()


def reference_accumulation():
    """Hand-written accumulation in one process: micro-batches of 16, two per step, each backward on loss / 2."""
    x, y = worker.data()
    xt, yt = x[: worker.N_TRAIN], y[: worker.N_TRAIN]
    net = worker.model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    steps = []
    for epoch in range(worker.EPOCHS):
        order = torch.randperm(worker.N_TRAIN, generator=torch.Generator().manual_seed(epoch))
        for b in range(worker.N_TRAIN // worker.BATCH):
            idx = order[b * worker.BATCH : (b + 1) * worker.BATCH]
            (torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]) / 2).backward()
            if b % 2 == 1:
                opt.step()
                opt.zero_grad()
                steps.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return steps


def test_accumulation_skips_the_all_reduce_of_non_final_micro_batches_and_equals_synced_accumulation(several):
    r0, r1 = (ranks["accumulation"] for ranks in several)
    assert r0["order"].index("GradientAccumulation") < r0["order"].index("Distributed")
    steps = reference_accumulation()
    assert len(r0["steps"]) == len(steps) == worker.EPOCHS * worker.N_TRAIN // worker.BATCH // 2
    # One all-reduce (the model fits one bucket) per optimizer step, not per micro-batch: no_sync worked.
    assert r0["reductions"] == r1["reductions"] == len(steps)
    # Equal to accumulation synced at every micro-batch (the one-process loop): the all-reduce is linear.
    for k, (got, other, want) in enumerate(zip(r0["steps"], r1["steps"], steps)):
        assert torch.equal(got, other), f"ranks differ after step {k}"
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"step {k}")


def test_a_killed_2_rank_run_resumes_bit_identically_mid_epoch(tmp_path):
    # Dropout draws from each rank's own generator (seeded per rank), so only a checkpoint that restores every
    # rank's RNG state reproduces the uninterrupted run.
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    launch("train", whole, "--dropout=0.3")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [
        os.path.join(ROOT, "tests", "distributed_worker.py"),
        "train",
        str(killed),
        "--dropout=0.3",
        "--hang-at=10",
    ]
    job = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    progress = killed / "progress"
    deadline = time.monotonic() + TIMEOUT
    try:
        # Checkpoints every 4 steps; both ranks wait at step 10 (epoch 1, batch 4 of 6), where the newest
        # checkpoint is step 8, mid-epoch: the kill lands there.
        while not (progress.exists() and progress.read_text().strip() and int(progress.read_text()) >= 10):
            assert job.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, 9)  # SIGKILL, torchrun and both ranks at once
        job.wait(timeout=30)
    assert not (killed / "rank0.pt").exists()
    launch("train", killed, "--dropout=0.3", "--resume")
    a = [torch.load(whole / f"rank{r}.pt", weights_only=False) for r in range(2)]
    b = [torch.load(killed / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert os.path.basename(b[0]["resumed_from"]).startswith("step-")  # mid-epoch checkpoint
    for r in range(2):
        for key, value in a[r]["final"].items():
            assert torch.equal(value, b[r]["final"][key]), (r, key)
        assert a[r]["metrics"] == b[r]["metrics"]  # rank 1's partial sums of the resumed epoch included
        assert a[r]["schedule"] == b[r]["schedule"]


def single_process_learner(train_loader):
    """The `train` scenario's learner in this process (no torchrun: Distributed does nothing)."""
    from loopkit import Distributed, Learner, Metrics, Schedule, Scheduler, accuracy
    from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum

    net = worker.model()
    momentum = Schedule([0, worker.EPOCHS], [0.9, 0.8], anneal="linear")
    f1 = worker.MulticlassF1Score(num_classes=3, average="macro")
    return Learner(
        net,
        train_loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        callbacks=[
            Distributed(),
            Scheduler({LearningRate: worker.LR, Momentum: momentum}),
            Metrics(accuracy, f1, names=["accuracy", "f1"]),
            worker.Record(),
        ],
    )


def test_another_world_size_refuses_a_mid_epoch_checkpoint_and_resumes_from_an_epoch_boundary(two_ranks, monkeypatch):
    from loopkit.resume.file import CheckpointError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out, (r0, _) = two_ranks
    x, y = worker.data()
    dataset = torch.utils.data.TensorDataset(x[: worker.N_TRAIN], y[: worker.N_TRAIN])
    # The split of the rest of a 2-rank epoch cannot be redone by 1 process: refused, saying why and what to do.
    learner = single_process_learner(torch.utils.data.DataLoader(dataset, batch_size=worker.BATCH, shuffle=True))
    with pytest.raises(CheckpointError, match=r"written by 2 processes and this run has 1.*end-of-epoch"):
        learner.fit(worker.EPOCHS, resume_from=out / "ckpt" / "step-000000016.pt")
    # From the end of epoch 2, one process with the same global batch (and DistributedSampler's order, as
    # the 2 ranks had) finishes the run with the weights the 2 ranks reached.
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, seed=0)
    learner = single_process_learner(torch.utils.data.DataLoader(dataset, batch_size=worker.BATCH, sampler=sampler))
    learner.fit(worker.EPOCHS, resume_from=out / "ckpt" / "epoch-0002.pt")
    steps = learner.callback(worker.Record).steps
    assert len(steps) == worker.N_TRAIN // worker.BATCH  # epoch 2 only
    torch.testing.assert_close(steps[-1], r0["steps"][-1], rtol=1e-10, atol=1e-12)
