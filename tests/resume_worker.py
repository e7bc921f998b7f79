"""A training run for the kill-and-resume tests: checkpoints every step, can be killed and resumed.

    python tests/resume_worker.py RUN_DIR [--resume] [--step-sleep S]

Writes RUN_DIR/progress (the last finished global step) and, at the end, RUN_DIR/final.pt with the model and
optimizer states and the logged histories.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from loopkit import Checkpoint, Learner, Metrics, Scheduler, accuracy, onecycle, onecycle_momentum
from loopkit.hyperparams import LearningRate, Momentum

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


def build(run_dir, sleep):
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
        Checkpoint(os.path.join(run_dir, "ckpt"), every_n_steps=1, keep_last=3),
        Progress(os.path.join(run_dir, "progress"), sleep),
    ]
    return Learner(model, train, opt, torch.nn.functional.cross_entropy, valid_data=valid, callbacks=callbacks)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    args = parser.parse_args()
    learner = build(args.run_dir, args.step_sleep)
    resume = Checkpoint.latest(os.path.join(args.run_dir, "ckpt")) if args.resume else None
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
