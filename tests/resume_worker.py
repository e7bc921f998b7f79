"""A training run for the kill-and-resume tests: checkpoints every step, can be killed and resumed.

    python tests/resume_worker.py RUN_DIR [--resume] [--step-sleep S] [--ckpt-dir NAME] [--resume-from DIR]
                                          [--kill-in-prune K]

Writes RUN_DIR/progress (the last finished global step), RUN_DIR/teardown when after_fit ran, and, at the end,
RUN_DIR/final.pt with the model and optimizer states and the logged histories. Checkpoints go to RUN_DIR/NAME
(default "ckpt"); --resume continues from the newest one there, or in DIR with --resume-from. On SIGTERM the
run saves a checkpoint and exits with status 75 (Preemption). --kill-in-prune K: the process SIGKILLs itself
when it is about to delete its K-th superseded checkpoint (a kill in the middle of pruning).
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import torch

from loopkit import Checkpoint, Learner, Metrics, Preemption, Scheduler, accuracy, onecycle, onecycle_momentum
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum

EPOCHS = 6


class Progress:
    """Records the finished step for the parent, and slows each step so a kill can land anywhere."""

    reads = ("global_step", "phase")
    run_after = ("Checkpoint",)

    def __init__(self, path, sleep):
        self.path, self.sleep = path, sleep

    def after_batch(self, learner):
        if learner.phase == "train":
            with open(self.path, "w") as f:
                f.write(str(learner.global_step))
            time.sleep(self.sleep)

    def after_fit(self, learner):
        with open(os.path.join(os.path.dirname(self.path), "teardown"), "w") as f:
            f.write(type(learner.error).__name__)


def kill_self_in_prune(k):
    """Replace os.unlink so that the k-th deletion of a checkpoint file SIGKILLs this process instead."""
    real_unlink, calls = os.unlink, []

    def unlink(path, *args, **kwargs):
        if str(path).endswith(".pt"):
            calls.append(path)
            if len(calls) == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_unlink(path, *args, **kwargs)

    os.unlink = unlink


def build(run_dir, sleep, ckpt_dir="ckpt"):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long()
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:100], y[:100]), batch_size=13, shuffle=True)
    valid = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[100:], y[100:]), batch_size=10)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.25), torch.nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    callbacks = [
        Scheduler({LearningRate: onecycle(EPOCHS, 1e-2), Momentum: onecycle_momentum(EPOCHS)}),
        Metrics(accuracy),
        Checkpoint(os.path.join(run_dir, ckpt_dir), every_n_steps=1, keep_last=3),
        Progress(os.path.join(run_dir, "progress"), sleep),
        Preemption(),
    ]
    return Learner(model, train, opt, torch.nn.functional.cross_entropy, valid_data=valid, callbacks=callbacks)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--ckpt-dir", default="ckpt")
    parser.add_argument("--resume-from", default=None)
    parser.add_argument("--kill-in-prune", type=int, default=None)
    args = parser.parse_args()
    if args.kill_in_prune:
        kill_self_in_prune(args.kill_in_prune)
    learner = build(args.run_dir, args.step_sleep, args.ckpt_dir)
    resume_dir = args.resume_from or os.path.join(args.run_dir, args.ckpt_dir)
    resume = Checkpoint.latest(resume_dir) if args.resume else None
    if args.resume and torch.initial_seed() is not None:
        torch.manual_seed(12345)  # a resumed process starts from a different RNG state: the checkpoint must fix it
    learner.fit(EPOCHS, resume_from=resume)
    torch.save(
        {
            "model": learner.model.state_dict(),
            "optimizer": learner.optimizer.state_dict(),
            "metrics": learner.callback(Metrics).history,
            "schedule": learner.callback(Scheduler).history,
            "resumed_from": resume,
        },
        os.path.join(args.run_dir, "final.pt"),
    )


if __name__ == "__main__":
    main()
