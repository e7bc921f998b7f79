"""The main job: train a classifier on generated spirals with a one-cycle schedule, and show what it learned.

Run ``python -m loopkit.demo`` (``--help`` for options). It needs no download: the data is generated. It trains
a small MLP with AdamW under a one-cycle learning-rate and momentum schedule, tracks loss and accuracy per
epoch, writes TensorBoard logs, and finally draws the decision regions it learned as text.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from .callbacks import Metrics, ProgressBar, TensorBoard, accuracy
from .datasets import spirals
from .loop.learner import Learner
from .scheduling.hyperparams import LearningRate, Momentum
from .scheduling.scheduler import Scheduler
from .scheduling.schedules import onecycle, onecycle_momentum

GLYPHS = "ox+*#@"


def build(
    epochs: int = 20,
    batch_size: int = 64,
    peak_lr: float = 2e-2,
    seed: int = 0,
    logdir: str | None = None,
    quiet: bool = False,
) -> Learner:
    """Assemble the demo's Learner: data, model, optimizer and callbacks."""
    torch.manual_seed(seed)
    x, y = spirals(n_per_class=1000, n_classes=3, noise=0.08, seed=seed)
    order = torch.randperm(len(x))
    cut = int(0.8 * len(x))
    train = torch.utils.data.TensorDataset(x[order[:cut]], y[order[:cut]])
    valid = torch.utils.data.TensorDataset(x[order[cut:]], y[order[cut:]])
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=1e-4)
    callbacks = [
        Scheduler({LearningRate: onecycle(epochs, peak_lr), Momentum: onecycle_momentum(epochs)}),
        Metrics(accuracy),
        ProgressBar(quiet=quiet),
    ]
    if logdir is not None:
        callbacks.append(TensorBoard(logdir))
    return Learner(
        model,
        torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
        optimizer,
        torch.nn.functional.cross_entropy,
        valid_data=torch.utils.data.DataLoader(valid, batch_size=512),
        callbacks=callbacks,
    )


def decision_map(model: torch.nn.Module, width: int = 64, height: int = 24) -> str:
    """The class the model predicts over [-1.2, 1.2]^2, one glyph per class, as lines of text."""
    xs = torch.linspace(-1.2, 1.2, width)
    ys = torch.linspace(1.2, -1.2, height)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    model.eval()
    with torch.no_grad():
        classes = model(grid).argmax(dim=1).reshape(height, width)
    return "\n".join("".join(GLYPHS[c] for c in row.tolist()) for row in classes)


def _n_points(loader: Any) -> int:
    """The number of samples behind one of the demo's DataLoaders (of TensorDatasets, which have a length)."""
    return len(loader.dataset)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopkit.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-2, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default="runs/demo", help="TensorBoard run directory ('' to disable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    torch.set_num_threads(min(2, torch.get_num_threads()))
    learner = build(args.epochs, args.batch_size, args.lr, args.seed, args.logdir or None, args.quiet)
    print(
        f"Training a 2-64-64-3 MLP on 3 spirals ({_n_points(learner.train_data)} train / "
        f"{_n_points(learner.valid_data)} valid points), one-cycle lr peaking at {args.lr:g}, "
        f"{args.epochs} epochs"
    )
    print("Callback order per event:\n  " + learner.describe().replace("\n", "\n  "))
    start = time.perf_counter()
    learner.fit(args.epochs)
    elapsed = time.perf_counter() - start

    metrics = learner.callback(Metrics)
    print(f"\n{'epoch':>5} {'train_loss':>10} {'valid_loss':>10} {'valid_accuracy':>14}")
    for row in metrics.history:
        print(f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['valid_loss']:>10.4f} {row['valid_accuracy']:>14.3f}")
    final = metrics.history[-1]
    lrs = learner.callback(Scheduler).history["lr"]
    print(
        f"\nTrained {learner.global_step} steps in {elapsed:.1f} s; lr went {lrs[0]:.2e} -> {max(lrs):.2e} -> "
        f"{lrs[-1]:.2e}."
    )
    print(
        f"What it learned: {final['valid_accuracy']:.1%} of held-out points classified correctly "
        f"(chance is 33.3%). Decision regions (one glyph per class):\n"
    )
    print(decision_map(learner.model))
    if args.logdir:
        print(f"\nTensorBoard logs are in {args.logdir}/ ; open them with:  tensorboard --logdir {args.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
