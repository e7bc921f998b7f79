"""Runs under torchrun for the FSDP2 and sharded-checkpoint tests (tests/test_callbacks_fsdp.py).

    python -m torch.distributed.run --standalone --nproc_per_node=W tests/fsdp_worker.py SCENARIO OUT [...]

``train``: a sharded loopkit run (Scheduler, GradientClip, GradientAccumulation, sharded Checkpoint); with
``--reference`` also a hand-written FSDP2 loop, a mixed-precision pair and a save that fails on rank 1.
``--resume CKPT`` (repeatable) continues a checkpoint written at any world size, writing its own checkpoints
into OUT/ckpt-<i>. Each rank saves what it saw to OUT/rank<r>.pt.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.distributed.checkpoint import FileSystemWriter

from loopkit import Checkpoint, Distributed, Learner, Schedule, Scheduler
from loopkit.callbacks import GradientAccumulation, GradientClip, MixedPrecision
from loopkit.distributed import rank, world_size
from loopkit.resume.sharded import full_state_dict
from loopkit.scheduling.optimizer_hyperparams import LearningRate

N, BATCH, EPOCHS, K, CLIP = 96, 16, 3, 2, 0.5
STEPS_PER_EPOCH = N // BATCH // K
TOTAL = EPOCHS * STEPS_PER_EPOCH
LR = Schedule([0, EPOCHS], [0.2, 0.02], anneal="linear")


def lr_at(step):
    """LR's value at optimizer step ``step`` (the Scheduler's clock: epochs, ``step / STEPS_PER_EPOCH``)."""
    return 0.2 + (0.02 - 0.2) * step / TOTAL


class Logged(torch.utils.data.Dataset):
    """The training samples, remembering which indices were loaded (num_workers=0: in this process)."""

    def __init__(self, x, y):
        self.x, self.y, self.loaded = x, y, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.loaded.append(int(i))
        return self.x[i], self.y[i]


def data(dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(6, 3, generator=g, dtype=torch.float64)).argmax(dim=1)
    return x.to(dtype), y


def model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).to(dtype)


def flat(state):
    return torch.cat([v.flatten() for v in state.values()])


class Record:
    """After each optimizer step: the step's loss, the whole weights (gathered), the lr the optimizer holds."""

    agrees_across_ranks = True  # decides nothing
    reads = ("model", "optimizer", "global_step", "step_loss", "epoch")
    run_after = ("Scheduler",)

    def __init__(self, dataset):
        self.dataset, self.losses, self.weights, self.lrs, self.loaded = dataset, [], [], [], []

    def before_epoch(self, learner):
        self.dataset.loaded = []

    def after_step(self, learner):
        self.losses.append(float(learner.step_loss))
        self.weights.append(flat(full_state_dict(learner.model)))
        self.lrs.append(learner.optimizer.param_groups[0]["lr"])

    def after_epoch(self, learner):
        self.loaded.append(list(self.dataset.loaded))


def loopkit_run(directory, resume, shard=True):
    x, y = data()
    dataset = Logged(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)
    net = model()
    record = Record(dataset)
    learner = Learner(
        net,
        loader,
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
        callbacks=[
            Distributed(shard=shard),
            Scheduler({LearningRate: LR}),
            GradientAccumulation(K),
            GradientClip(CLIP),
            Checkpoint(directory, every_n_steps=2, every_epoch=False, keep_last=10),
            record,
        ],
    )
    learner.fit(EPOCHS, resume_from=resume)
    return {
        "losses": record.losses,
        "weights": record.weights,
        "lrs": record.lrs,
        "loaded": record.loaded,
        "sharded": type(learner.model).__name__,
        "saved": [os.path.basename(p) for p in learner.callback(Checkpoint).saved],
    }


def hand_written_fsdp():
    """The same training written against torch alone: FSDP2 units per Linear, accumulation with the gradient
    sync off on the first micro-batch of each window, clip_grad_norm_ on the sharded gradients, lr by hand."""
    from torch.distributed.fsdp import fully_shard

    x, y = data()
    net = model()
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sampler = torch.utils.data.DistributedSampler(torch.utils.data.TensorDataset(x, y), seed=0)
    losses, weights, step = [], [], 0
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        idx = list(sampler)
        per_rank = BATCH // world_size()
        window = 0.0
        for b in range(N // BATCH):
            part = idx[b * per_rank : (b + 1) * per_rank]
            last = b % K == K - 1
            net.set_requires_gradient_sync(last)
            loss = torch.nn.functional.cross_entropy(net(x[part]), y[part])
            (loss / K).backward()
            window += loss.item() / K
            if last:
                torch.nn.utils.clip_grad_norm_(net.parameters(), CLIP)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                opt.step()
                opt.zero_grad()
                step += 1
                losses.append(window)
                window = 0.0
                weights.append(flat(full_state_dict(net)))
    return {"losses": losses, "weights": weights}


def mixed_precision_pair(dtype=torch.bfloat16, init_scale=None):
    """One epoch in float32 with parameters gathered in ``dtype`` and gradients reduced in float32: loopkit
    (Distributed(param_dtype=dtype) + MixedPrecision(dtype)) and by hand (MixedPrecisionPolicy + autocast, and
    for float16 torch's GradScaler recipe with ``init_scale``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    x, y = data(torch.float32)
    losses = {}
    net = model(torch.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    class Losses:
        reads = ("loss", "grad_scaler")

        def __init__(self):
            self.seen, self.scales = [], []

        def after_loss(self, learner):
            self.seen.append(learner.loss.item())

        def after_batch(self, learner):
            if learner.grad_scaler is not None:
                self.scales.append(learner.grad_scaler.get_scale())

    seen = Losses()
    scaler_options = {} if init_scale is None else {"init_scale": init_scale}
    learner = Learner(
        net,
        loader,
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[Distributed(shard=True, param_dtype=dtype), MixedPrecision(dtype, **scaler_options), seen],
    )
    learner.fit(1)
    losses["loopkit"], losses["loopkit_scales"] = seen.seen, seen.scales
    losses["loopkit_weights"] = flat(full_state_dict(net))
    losses["param_dtype"] = str(net[0].weight.dtype)  # the sharded parameters stay float32
    net = model(torch.float32)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mp_policy=policy)
    fully_shard(net, mp_policy=policy)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", **scaler_options) if dtype == torch.float16 else None
    sampler = torch.utils.data.DistributedSampler(torch.utils.data.TensorDataset(x, y), seed=0)
    sampler.set_epoch(0)
    idx, per_rank, hand, scales = list(sampler), BATCH // world_size(), [], []
    for b in range(N // BATCH):
        part = idx[b * per_rank : (b + 1) * per_rank]
        with torch.autocast("cpu", dtype=dtype):
            loss = torch.nn.functional.cross_entropy(net(x[part]), y[part])
        hand.append(loss.item())
        if scaler is None:
            loss.backward()
            opt.step()
        else:  # torch's recipe: scale, backward, step (unscales; skipped on inf/NaN on any shard), update
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        opt.zero_grad()
    losses["hand"], losses["hand_scales"] = hand, scales
    losses["hand_weights"] = flat(full_state_dict(net))
    return losses


def failing_save(out):
    """Rank 1's storage fails while the second sharded checkpoint (step 4) is written."""
    real = FileSystemWriter.write_data
    state = {"step": 0}

    def write_data(self, plan, planner):
        state["step"] += 1
        if rank() == 1 and state["step"] == 2:
            raise OSError(28, "No space left on device (simulated on rank 1)")
        return real(self, plan, planner)

    FileSystemWriter.write_data = write_data
    directory = os.path.join(out, "failing")
    x, y = data()
    net = model()
    checkpoint = Checkpoint(directory, every_n_steps=2, every_epoch=False, keep_last=10)
    learner = Learner(
        net,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH),
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.nn.functional.cross_entropy,
        callbacks=[Distributed(shard=True), checkpoint],
    )
    try:
        learner.fit(2)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        FileSystemWriter.write_data = real
    return {
        "error": error,
        "last": checkpoint.last and os.path.basename(checkpoint.last),
        "latest": os.path.basename(Checkpoint.latest(directory) or ""),
        "listing": sorted(os.listdir(directory)),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["train"])
    parser.add_argument("out")
    parser.add_argument("--resume", action="append", default=[], help="continue this checkpoint (repeatable)")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(1000 + rank())  # per-rank seeds: nothing that must agree may depend on them
    results = {"world_size": world_size()}
    if args.resume:
        results["resumed"] = [
            loopkit_run(os.path.join(args.out, f"ckpt-{i}"), path) for i, path in enumerate(args.resume)
        ]
    if args.reference:
        results["run"] = loopkit_run(os.path.join(args.out, "ckpt"), None)
        results["hand"] = hand_written_fsdp()
        results["mixed"] = mixed_precision_pair()
        # float16 with a scale so large that the first steps overflow: skipped on both ranks alike, then halved.
        results["float16"] = mixed_precision_pair(torch.float16, init_scale=2.0**40)
        results["failing"] = failing_save(args.out)
    torch.save(results, os.path.join(args.out, f"rank{rank()}.pt"))


if __name__ == "__main__":
    main()
