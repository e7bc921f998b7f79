"""Runs under torchrun on each of two "nodes" (network namespaces) for tests/test_callbacks_distributed_nodes.py.

    ip netns exec NODE env LK_NODE=a|b python -m torch.distributed.run --nnodes=2 --nproc_per_node=2
        --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT ... tests/multinode_worker.py OUT [--hang-at STEP]

The `train` run of tests/distributed_worker.py (global batch 16, lr and momentum schedules) on 4 ranks, with
Checkpoint every 2 steps into OUT/ckpt (the filesystem both nodes share). Rank 3 (its own decision, on
whichever node it is) stops the run at the end of epoch 1: every rank must stop there. Each rank writes
OUT/rank<r>.pt and lists the checkpoint files it wrote; each process adds its pid to OUT/pids-<node>.txt.

Every rank resumes from ``Checkpoint.latest(OUT/ckpt)`` when there is one (a job torchrun restarted). With
``--hang-at STEP``, a run that did not resume waits at STEP, after that step's checkpoint, until it is killed:
the test kills one node's processes there and torchrun's ``--max-restarts`` starts the job again.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
from datetime import timedelta

import torch

import loopkit.callbacks.checkpoint as checkpoint_module
from loopkit import CancelFit, Checkpoint, Distributed, Learner, Schedule, Scheduler
from loopkit.distributed import rank
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum
from tests.distributed_worker import BATCH, EPOCHS, LR, N_TRAIN, Record, Slow, data, model


class StopOnRank3:
    """Rank 3 alone decides to stop at the end of epoch 1 (a rank-local decision every rank must take)."""

    reads = ("epoch",)

    def after_epoch(self, learner):
        if rank() == 3 and learner.epoch == 1:
            raise CancelFit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hang-at", type=int, default=None)
    args = parser.parse_args()
    out = args.out
    torch.set_num_threads(1)
    # A hang prints every thread's stack into torchrun's output, which the test shows, before its 240 s deadline.
    faulthandler.dump_traceback_later(200, exit=True)
    with open(os.path.join(out, f"pids-{os.environ['LK_NODE']}.txt"), "a") as pids:
        pids.write(f"{os.getpid()}\n")
    real_save = checkpoint_module.save_atomic

    def save_atomic(obj, path):  # which rank writes which checkpoint file
        with open(os.path.join(out, f"saves-{rank()}.txt"), "a") as saves:
            saves.write(f"{path}\n")
        real_save(obj, path)

    checkpoint_module.save_atomic = save_atomic
    x, y = data()
    ds = torch.utils.data.TensorDataset
    loader = torch.utils.data.DataLoader(ds(x[:N_TRAIN], y[:N_TRAIN]), batch_size=BATCH, shuffle=True)
    net = model()
    record = Record()
    ckpt = os.path.join(out, "ckpt")
    resume_from = Checkpoint.latest(ckpt) if os.path.isdir(ckpt) else None
    learner = Learner(
        net,
        loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        callbacks=[
            Distributed(timeout=timedelta(seconds=60)),
            Scheduler({LearningRate: LR, Momentum: Schedule([0, EPOCHS], [0.9, 0.8], anneal="linear")}),
            Checkpoint(ckpt, every_n_steps=2, keep_last=2),
            StopOnRank3(),
            record,
            Slow(os.path.join(out, "progress"), None if resume_from else args.hang_at),
        ],
    )
    learner.fit(EPOCHS, resume_from=resume_from)
    torch.save(
        {
            "env": {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LK_NODE")},
            "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            "resumed_from": resume_from and os.path.basename(resume_from),
            "epochs": len(record.epochs),
            "steps": len(record.steps),
            "final": record.steps[-1],
        },
        os.path.join(out, f"rank{rank()}.pt"),
    )


if __name__ == "__main__":
    main()
