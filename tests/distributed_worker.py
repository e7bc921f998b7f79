"""Runs under torchrun for the 2-rank gloo tests (tests/test_callbacks_distributed.py); one scenario per launch.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py SCENARIO OUT [...]

Each rank saves what it saw to OUT/rank<r>.pt for the test to compare with a single-process reference.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from datetime import timedelta

import torch
from torchmetrics.classification import MulticlassF1Score

import loopkit.callbacks.checkpoint as checkpoint_module
from loopkit import (
    CancelFit,
    CancelStep,
    Checkpoint,
    Distributed,
    Learner,
    Metrics,
    NaNGuard,
    ProgressBar,
    Schedule,
    Scheduler,
    TensorBoard,
    accuracy,
)
from loopkit.callbacks import GradientAccumulation
from loopkit.distributed import rank
from loopkit.loop.callback import callback_name
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum

N_TRAIN, N_VALID, BATCH, EPOCHS = 96, 37, 16, 3
LR = Schedule([0, EPOCHS], [0.2, 0.02], anneal="linear")


def data():
    """A 3-class problem in float64 (so a rank-vs-one-process comparison sees rounding, not noise)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N_TRAIN + N_VALID, 6, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(6, 3, generator=g, dtype=torch.float64)).argmax(dim=1)
    return x, y


def model(dropout=0.0):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 3)]
    return torch.nn.Sequential(*layers).double()


def unwrapped(m):
    return getattr(m, "module", m)


class Record:
    """What every rank holds after each optimizer step and at each epoch's end."""

    reads = ("model", "optimizer", "global_step", "epoch")
    run_after = ("Scheduler",)

    def __init__(self):
        self.steps, self.hparams, self.epochs = [], [], []

    def after_step(self, learner):
        self.steps.append(torch.cat([p.detach().flatten() for p in unwrapped(learner.model).parameters()]))
        self.hparams.append([(g["lr"], g["momentum"]) for g in learner.optimizer.param_groups])

    def after_epoch(self, learner):
        self.epochs.append(torch.cat([p.detach().flatten() for p in unwrapped(learner.model).parameters()]))


class Slow:
    """Reports the finished step; at step ``hang_at`` every rank waits (so a kill lands there, whatever the load)."""

    reads = ("global_step", "phase")
    run_after = ("Checkpoint",)

    def __init__(self, path, hang_at):
        self.path, self.hang_at = path, hang_at

    def after_batch(self, learner):
        if learner.phase == "train":
            if rank() == 0:
                with open(self.path, "w") as f:
                    f.write(str(learner.global_step))
            if learner.global_step == self.hang_at:
                time.sleep(600)


def train(out, *, resume=False, hang_at=None, dropout=0.0):
    with (
        open(os.path.join(out, f"saves-{rank()}.txt"), "a") as saves,
        open(os.path.join(out, f"bar-{rank()}.txt"), "w") as bar,
    ):
        _train(out, saves, bar, resume=resume, hang_at=hang_at, dropout=dropout)


def _train(out, saves, bar, *, resume, hang_at, dropout):
    x, y = data()
    ds = torch.utils.data.TensorDataset
    train_loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    valid_loader = torch.utils.data.DataLoader(ds(x[N_TRAIN:], y[N_TRAIN:]), batch_size=8)
    net = model(dropout)
    record = Record()
    real_save = checkpoint_module.save_atomic

    def save_atomic(obj, path):  # which rank writes which checkpoint file
        saves.write(f"{path}\n")
        saves.flush()
        real_save(obj, path)

    checkpoint_module.save_atomic = save_atomic
    callbacks = [
        Distributed(),
        Scheduler({LearningRate: LR, Momentum: Schedule([0, EPOCHS], [0.9, 0.8], anneal="linear")}),
        Metrics(accuracy, MulticlassF1Score(num_classes=3, average="macro"), names=["accuracy", "f1"]),
        Checkpoint(os.path.join(out, "ckpt"), every_n_steps=4, keep_last=3),
        TensorBoard(os.path.join(out, "tb"), flush_every=5),
        ProgressBar(force=True, file=bar, refresh_every=1),
        record,
        Slow(os.path.join(out, "progress"), hang_at),
    ]
    learner = Learner(
        net,
        train_loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        valid_data=valid_loader,
        callbacks=callbacks,
    )
    torch.manual_seed(1000 + rank())  # per-rank seeds: nothing that must agree may depend on them
    resume_from = Checkpoint.latest(os.path.join(out, "ckpt")) if resume else None
    learner.fit(EPOCHS, resume_from=resume_from)
    torch.save(
        {
            "steps": record.steps,
            "hparams": record.hparams,
            "epochs": record.epochs,
            "final": unwrapped(learner.model).state_dict(),
            "model_restored": learner.model is net and learner.train_data is train_loader,
            "metrics": learner.callback(Metrics).history,
            "schedule": learner.callback(Scheduler).history,
            "resumed_from": resume_from,
        },
        os.path.join(out, f"rank{rank()}.pt"),
    )


class Poison:
    """On one rank, at one step, makes the loss NaN (what a bad sample would do to that rank alone)."""

    reads = ("global_step", "phase")
    writes = ("loss",)

    def __init__(self, rank, step):
        self.rank, self.step = rank, step

    def after_loss(self, learner):
        if rank() == self.rank and learner.phase == "train" and learner.global_step == self.step:
            learner.loss = learner.loss * float("nan")


class Fail:
    """On one rank, at one step, raises an error."""

    reads = ("global_step", "phase")

    def __init__(self, rank, step):
        self.rank, self.step = rank, step

    def after_batch(self, learner):
        if rank() == self.rank and learner.phase == "train" and learner.global_step == self.step:
            raise RuntimeError(f"boom on rank {rank()} at step {self.step}")


class StopAlone:
    """On one rank only, raises CancelFit at the end of one epoch (a rank-local decision)."""

    reads = ("epoch",)

    def __init__(self, rank, epoch):
        self.rank, self.epoch = rank, epoch

    def after_epoch(self, learner):
        if rank() == self.rank and learner.epoch == self.epoch:
            raise CancelFit


class Alone:
    """On rank 1 only, raises ``cancel`` once in one batch event: at global step ``step`` of the train phase, or
    in the first batch of epoch 0's validation. A user callback: it declares no ``agrees_across_ranks``."""

    reads = ("global_step", "phase", "epoch")

    def __init__(self, event, cancel, step=None):
        self.cancel, self.step, self.raised, self.valid_ends = cancel, step, False, 0
        setattr(self, event, self._maybe)

    def _maybe(self, learner):
        here = (
            (learner.phase == "valid" and learner.epoch == 0)
            if self.step is None
            else (learner.phase == "train" and learner.global_step == self.step)
        )
        if rank() == 1 and here and not self.raised:
            self.raised = True
            raise self.cancel

    def after_valid(self, learner):
        self.valid_ends += 1


class Clock:
    """Rank 1's clock jumps a day ahead after its third step (stands in for ranks whose clocks disagree)."""

    def __init__(self, learner):
        self.learner = learner

    def monotonic(self):
        jump = 86400.0 if rank() == 1 and self.learner.global_step >= 3 else 0.0
        return time.monotonic() + jump


def _counted_post(posts, real_post, outcome, *, blocking):
    """agreement._post, noting whether each collective of the agreement's own was blocking."""
    posts.append(blocking)
    return real_post(outcome, blocking=blocking)


def decisions(out):
    """Short runs in one launch, in each of which one rank alone meets a NaN loss, a decision to stop at the end
    of an epoch, or a passed deadline; every rank must take the same course."""
    import loopkit.loop.agreement as agreement
    import loopkit.loop.learner as learner_module

    x, y = data()
    ds = torch.utils.data.TensorDataset
    results = {}
    alone = {
        "batch_stop": lambda: Alone("after_batch", CancelFit, step=3),
        "step_skip": lambda: Alone("before_step", CancelStep, step=2),
        "valid_stop": lambda: Alone("after_loss", CancelFit),
        "accum_stop": lambda: Alone("after_batch", CancelFit, step=2),  # with GradientAccumulation(2)
    }
    for what in ("nan", "stop", "deadline", *alone):
        train_loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
        valid_loader = torch.utils.data.DataLoader(ds(x[N_TRAIN:], y[N_TRAIN:]), batch_size=8)
        net = model()
        guard, record = NaNGuard(), Record()
        extra = (
            [alone[what](), *([GradientAccumulation(2)] if what == "accum_stop" else [])]
            if what in alone
            else {"nan": [Poison(1, 5)], "stop": [StopAlone(1, 0)], "deadline": []}[what]
        )
        learner = Learner(
            net,
            train_loader,
            torch.optim.SGD(net.parameters(), lr=0.1),
            torch.nn.functional.cross_entropy,
            valid_data=valid_loader,
            callbacks=[Distributed(timeout=timedelta(seconds=60)), Metrics(), guard, record, *extra],
        )
        learner_module.time = Clock(learner) if what == "deadline" else time  # type: ignore[assignment]
        posts = []
        real_post = agreement._post
        agreement._post = functools.partial(_counted_post, posts, real_post)
        try:
            learner.fit(EPOCHS, max_time=3600 if what == "deadline" else None)
        finally:
            agreement._post = real_post
        results[what] = {
            "tripped_at": guard.tripped_at,
            "steps": record.steps,
            "epochs": len(record.epochs),
            "global_step": learner.global_step,
            "valid_ends": extra[0].valid_ends if what in alone else None,
            "collectives_of_their_own": {"blocking": posts.count(True), "late": posts.count(False)},
        }
    results["fully_shard"] = fully_sharded(x, y)
    results["accumulation"] = accumulated(x, y)
    torch.save(results, os.path.join(out, f"rank{rank()}.pt"))


def fully_sharded(x, y):
    """The equality run of `train` (same data, global batch and schedules) with the model sharded by FSDP2."""
    from torch.distributed.fsdp import fully_shard

    ds = torch.utils.data.TensorDataset
    train_loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    net = model()
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    record = Full()
    learner = Learner(
        net,
        train_loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        callbacks=[
            Distributed(),
            Scheduler({LearningRate: LR, Momentum: Schedule([0, EPOCHS], [0.9, 0.8], anneal="linear")}),
            record,
        ],
    )
    learner.fit(EPOCHS)
    return {"steps": record.steps, "model_is_sharded": type(learner.model).__name__}


def accumulated(x, y):
    """Two micro-batches of 16 (8 per rank) per optimizer step; counts the gradient all-reduces DDP runs."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    ds = torch.utils.data.TensorDataset
    train_loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    net = model()
    reductions = []

    class CountReductions:
        reads = ("model",)

        def before_fit(self, learner):
            def hook(state, bucket):
                reductions.append(bucket.index())
                return allreduce_hook(state, bucket)

            learner.model.register_comm_hook(None, hook)

    record = Record()
    learner = Learner(
        net,
        train_loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        callbacks=[Distributed(), GradientAccumulation(2), CountReductions(), record],
    )
    learner.fit(EPOCHS)
    return {
        "steps": record.steps,
        "reductions": len(reductions),
        "order": [callback_name(c) for c in learner.callbacks],
    }


class Full:
    """The whole parameters after each step, gathered from their shards (FSDP2's DTensors)."""

    reads = ("model",)

    def __init__(self):
        self.steps = []

    def after_step(self, learner):
        params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in learner.model.parameters()]
        self.steps.append(torch.cat([p.detach().flatten() for p in params]))


def failing(out):
    """Rank 1 raises an error at step 3."""
    x, y = data()
    ds = torch.utils.data.TensorDataset
    train_loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    net = model()
    learner = Learner(
        net,
        train_loader,
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[Distributed(timeout=timedelta(seconds=60)), Fail(1, 3)],
    )
    learner.fit(EPOCHS)
    torch.save({}, os.path.join(out, f"rank{rank()}.pt"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-at", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=0.0)
    args = parser.parse_args()
    if args.scenario == "train":
        train(args.out, resume=args.resume, hang_at=args.hang_at, dropout=args.dropout)
    elif args.scenario == "decisions":
        decisions(args.out)
    elif args.scenario == "error":
        failing(args.out)
    else:
        raise SystemExit(f"unknown scenario {args.scenario!r}")


if __name__ == "__main__":
    main()
