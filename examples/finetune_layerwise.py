"""Fine-tuning with layer-wise learning-rate decay and a head-only warm-up, under a warmup + linear decay schedule.

A backbone is first trained on task A (regress four hidden features of the input). Task B (classify by the
signs of two of those features) then gets a new head: for one epoch only the head learns (FreezeUntil), then
every block does, the lower ones more slowly (lr x 0.5 per block down), all under a linear warmup + decay
stepped per batch (the transformers convention). Biases and norms get no weight decay.

Run ``python examples/finetune_layerwise.py``.
"""

from __future__ import annotations

import torch

from loopkit import Learner, LearningRate, Metrics, Scheduler, accuracy
from loopkit.param_groups import FreezeUntil, layerwise_groups
from loopkit.schedules import warmup_linear


def tasks(n: int = 2000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    hidden = torch.tanh(x @ torch.randn(10, 4, generator=g))
    y_b = ((hidden[:, 0] > 0) ^ (hidden[:, 1] > 0)).long()
    return x, hidden, y_b


def loaders(x, y, batch_size=64, valid_from=1600):
    train = torch.utils.data.TensorDataset(x[:valid_from], y[:valid_from])
    valid = torch.utils.data.TensorDataset(x[valid_from:], y[valid_from:])
    return (
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
        torch.utils.data.DataLoader(valid, batch_size=400),
    )


def run(pretrain_epochs: int = 5, finetune_epochs: int = 4, decay: float = 0.5, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    x, hidden, y_b = tasks(seed=seed)
    blocks = [
        torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.LayerNorm(64), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.ReLU()),
    ]
    pretrain_head = torch.nn.Linear(64, 4)
    model_a = torch.nn.Sequential(*blocks, pretrain_head)
    train_a, valid_a = loaders(x, hidden)
    Learner(
        model_a,
        train_a,
        torch.optim.AdamW(model_a.parameters(), lr=3e-3),
        torch.nn.functional.mse_loss,
        valid_data=valid_a,
    ).fit(pretrain_epochs)

    head = torch.nn.Linear(64, 2)
    model_b = torch.nn.Sequential(*blocks, head)
    groups = layerwise_groups([*blocks, head], lr=3e-3, decay=decay, weight_decay=0.01)
    train_b, valid_b = loaders(x, y_b)
    steps = finetune_epochs * len(train_b)
    metrics = Metrics(accuracy)
    scheduler = Scheduler({LearningRate: warmup_linear(len(train_b) // 2, steps, 3e-3)})
    learner = Learner(
        model_b,
        train_b,
        torch.optim.AdamW(groups),
        torch.nn.functional.cross_entropy,
        valid_data=valid_b,
        callbacks=[FreezeUntil(blocks, epoch=1), scheduler, metrics],
    )
    learner.fit(finetune_epochs)
    return {
        "history": metrics.history,
        "lr": scheduler.history["lr"],
        "group_lrs": {g["name"]: g["lr"] for g in learner.optimizer.param_groups},
    }


def main() -> None:
    result = run()
    for row in result["history"]:
        print(f"epoch {row['epoch']}: valid accuracy {row['valid_accuracy']:.3f}")
    print("final lr per group:", {k: f"{v:.2e}" for k, v in result["group_lrs"].items()})


if __name__ == "__main__":
    main()
