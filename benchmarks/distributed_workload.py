"""The 2-rank overhead workload, run under torchrun by benchmarks/bench_distributed.py (or by hand):

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/distributed_workload.py OUT.json [B]

Tiny MLP (Linear(32,64)-ReLU-Linear(64,1)), global batch 16 (8 per rank), N_BATCHES global batches an epoch
from an in-memory TensorDataset through a DataLoader, SGD with momentum, one thread per rank, gloo. Two ways,
with the same features, timed epoch against epoch in interleaved rounds (the order alternates every round):

- ``hand``: a hand-written DDP loop: DistributedSampler with set_epoch, torch's OneCycleLR (lr and momentum)
  stepped every step, loss sums kept on the device and all-reduced once an epoch, a tqdm bar on rank 0
  (drawing into a null stream) updated every step with the loss read every 20 steps;
- ``loopkit``: Learner with Distributed(), Scheduler (one-cycle lr and momentum), Metrics and a forced
  ProgressBar into a null stream: what a user of loopkit writes for the same run.

Rank 0 writes per-round seconds, the median per-round ratio loopkit / hand and the samples per second of
each to OUT.json. ``B`` sets the global batch (default 16), for throughput at other sizes.
"""

from __future__ import annotations

import copy
import io
import json
import statistics
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from loopkit import Distributed, Learner, Metrics, ProgressBar, Scheduler, onecycle, onecycle_momentum
from loopkit.scheduling.optimizer_hyperparams import LearningRate, Momentum

N_BATCHES, BATCH, ROUNDS = 400, 16, 7


def problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    dataset = torch.utils.data.TensorDataset(torch.randn(N_BATCHES * BATCH, 32), torch.randn(N_BATCHES * BATCH, 1))
    return model, dataset


def hand_written(model, dataset):
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH // world, sampler=sampler)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    epoch = 0

    def run():
        nonlocal epoch
        sampler.set_epoch(epoch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=len(loader))
        bar = tqdm(total=len(loader), file=io.StringIO()) if rank == 0 else None
        sums = torch.zeros(2, dtype=torch.float64)
        ddp.train()
        for step, (xb, yb) in enumerate(loader, 1):
            loss = torch.nn.functional.mse_loss(ddp(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums += torch.stack([loss.detach().double() * len(xb), torch.tensor(float(len(xb)), dtype=torch.float64)])
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        dist.all_reduce(sums)
        if bar is not None:
            bar.close()
        epoch += 1
        return (sums[0] / sums[1]).item()

    return run


class UserCallback:
    """A callback of the user's at batch level that declares no ``agrees_across_ranks``: the ranks agree on the
    outcome of its event (one all-reduce of one integer a step)."""

    def after_batch(self, learner):
        pass


def with_loopkit(model, dataset, *extra):
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)
    callbacks = [
        Distributed(),
        Scheduler({LearningRate: onecycle(1, 0.01), Momentum: onecycle_momentum(1)}),
        Metrics(),
        ProgressBar(force=True, file=io.StringIO()),
        *extra,
    ]
    learner = Learner(
        model, loader, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), torch.nn.functional.mse_loss,
        callbacks=callbacks,
    )  # fmt: skip
    return lambda: learner.fit(1)


def main():
    global BATCH
    if len(sys.argv) > 2:
        BATCH = int(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model, dataset = problem()  # N_BATCHES global batches of BATCH samples
    runs = {
        "hand": hand_written(copy.deepcopy(model), dataset),
        "loopkit": with_loopkit(copy.deepcopy(model), dataset),
        "agreed": with_loopkit(copy.deepcopy(model), dataset, UserCallback()),
    }
    for run in runs.values():  # warm up
        run()
    rounds = []
    for i in range(ROUNDS):
        times = {}
        cases = list(runs)
        for case in cases[i % 3 :] + cases[: i % 3]:  # interleaved, each case first in turn
            dist.barrier()
            start = time.perf_counter()
            runs[case]()
            times[case] = time.perf_counter() - start
        rounds.append(times)
    if dist.get_rank() == 0:
        ratio = statistics.median(r["loopkit"] / r["hand"] for r in rounds)
        ratio_agreed = statistics.median(r["agreed"] / r["hand"] for r in rounds)
        per_step = {c: statistics.median(r[c] for r in rounds) / N_BATCHES * 1e6 for c in runs}
        samples_per_s = {c: BATCH / (us * 1e-6) for c, us in per_step.items()}
        result = {
            "rounds": rounds,
            "ratio": ratio,
            "ratio_agreed": ratio_agreed,
            "us_per_step": per_step,
            "samples_per_s": samples_per_s,
            "n_batches": N_BATCHES,
            "global_batch": BATCH,
            "world_size": dist.get_world_size(),
        }
        with open(sys.argv[1], "w") as f:
            json.dump(result, f, indent=1)
        print(f"world {dist.get_world_size()}, global batch {BATCH}: loopkit / hand-written DDP loop {ratio:.3f}, "
              f"with a user batch-level callback (agreed per step) {ratio_agreed:.3f}, "
              f"us per step {per_step}, samples/s {samples_per_s}")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
