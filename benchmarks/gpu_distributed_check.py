"""What Distributed does under NCCL on a GPU machine, checked in one process (world size 1: one GPU here).

    torchrun --standalone --nproc_per_node=1 benchmarks/gpu_distributed_check.py OUT_DIR

Checks, printing one line each (exit status 1 if any fails): the group is NCCL; learner.device is
cuda:LOCAL_RANK during the fit and the model and batches live there; the model is DDP(device_ids=[...]) around
SyncBatchNorm layers (converted from BatchNorm1d); Metrics and a checkpoint work on the GPU; a run resumed from
a mid-epoch checkpoint ends with bit-identical weights (CUDA RNG state restored: dropout on the GPU).
"""

from __future__ import annotations

import os
import sys

import torch

from loopkit import Checkpoint, Distributed, Learner, Metrics, accuracy
from loopkit.distributed import world_size

FAILED = []


def check(what, ok):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILED.append(what)


class Seen:
    reads = ("model", "device", "xb")

    def __init__(self):
        self.model = self.device = self.batch_device = None

    def after_pred(self, learner):
        self.model, self.device, self.batch_device = learner.model, learner.device, learner.xb.device


def run(out, resume=None, seen=None):
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = (x[:, 0] > 0).long()
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, pin_memory=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(32, 2),
    )
    callbacks = [Distributed(sync_batchnorm=True), Metrics(accuracy), Checkpoint(out, every_n_steps=3, keep_last=20)]
    if seen is not None:
        callbacks.append(seen)
    learner = Learner(model, train, torch.optim.AdamW(model.parameters(), lr=1e-2), torch.nn.functional.cross_entropy,
                      valid_data=train, callbacks=callbacks)  # fmt: skip
    torch.cuda.manual_seed(1234)
    learner.fit(3, resume_from=resume)
    return learner


def main():
    out = sys.argv[1]
    seen = Seen()
    learner = run(os.path.join(out, "a"), seen=seen)
    local = int(os.environ.get("LOCAL_RANK", 0))
    check("backend is nccl", torch.distributed.get_backend() == "nccl")
    check(f"world size {world_size()}", world_size() >= 1)
    check("learner.device during the fit is cuda:LOCAL_RANK", seen.device == torch.device("cuda", local))
    check("batches moved to the rank's GPU", seen.batch_device == torch.device("cuda", local))
    ddp = seen.model
    check("model wrapped in DDP with device_ids", isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
          and ddp.device_ids == [local])  # fmt: skip
    check("BatchNorm1d converted to SyncBatchNorm", any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.modules()))
    check("parameters on the GPU", all(p.is_cuda for p in learner.model.parameters()))
    metrics = learner.callback(Metrics).history
    check(
        f"metrics computed on the GPU: {metrics[-1]}", len(metrics) == 3 and 0.0 <= metrics[-1]["valid_accuracy"] <= 1
    )
    final = {k: v.clone() for k, v in learner.model.state_dict().items()}
    mid = os.path.join(out, "a", "step-000000012.pt")  # 8 steps an epoch: epoch 1, batch 4
    resumed = run(os.path.join(out, "b"), resume=mid)
    same = all(torch.equal(final[k], v) for k, v in resumed.model.state_dict().items())
    check("mid-epoch resume on the GPU ends bit-identical (CUDA dropout RNG restored)", same)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
