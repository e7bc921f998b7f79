"""A batch-size ramp: 16 -> 256 over the epochs (geometric), with a one-cycle learning rate stepped per batch.

The batch size is a scheduled hyperparameter like any other: a per-epoch Scheduler sets the DataLoader's
ScheduledBatchSampler at the start of each epoch, so the epoch (still one pass over the data) has fewer, larger
steps, and the per-step lr schedule lays itself out over the epoch's actual length.

Run ``python examples/batch_size_ramp.py``.
"""

from __future__ import annotations

import torch

from loopkit import Learner, LearningRate, Metrics, Schedule, Scheduler, accuracy, onecycle
from loopkit.datasets import spirals
from loopkit.scheduling import BatchSize, ScheduledBatchSampler


class StepsPerEpoch:
    reads = ("n_batches", "epoch")

    def __init__(self):
        self.counts = []

    def before_train(self, learner):
        self.counts.append(learner.n_batches)


def run(epochs: int = 5, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    x, y = spirals(n_per_class=600, noise=0.08, seed=seed)
    order = torch.randperm(len(x))
    train = torch.utils.data.TensorDataset(x[order[:1500]], y[order[:1500]])
    valid = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x[order[1500:]], y[order[1500:]]), batch_size=300
    )
    sampler = ScheduledBatchSampler(len(train), batch_size=16, shuffle=True)
    loader = torch.utils.data.DataLoader(train, batch_sampler=sampler)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
    )
    sizes = Scheduler(
        {BatchSize: Schedule([0, epochs - 1], [16, 256], anneal="exp")}, per="epoch", name="BatchSizeScheduler"
    )
    lr = Scheduler({LearningRate: onecycle(epochs, 2e-2)})
    counter, metrics = StepsPerEpoch(), Metrics(accuracy)
    Learner(
        model,
        loader,
        torch.optim.AdamW(model.parameters(), lr=2e-2),
        torch.nn.functional.cross_entropy,
        valid_data=valid,
        callbacks=[sizes, lr, metrics, counter],
    ).fit(epochs)
    return {
        "batch_sizes": [round(v) for v in sizes.history["BatchSize"]],
        "steps_per_epoch": counter.counts,
        "history": metrics.history,
        "lr": lr.history["lr"],
    }


def main() -> None:
    result = run()
    for size, steps, row in zip(result["batch_sizes"], result["steps_per_epoch"], result["history"]):
        print(
            f"epoch {row['epoch']}: batch size {size:>3}, {steps:>3} steps, valid accuracy {row['valid_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
